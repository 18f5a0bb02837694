#!/bin/sh
# A Vulkan device on a machine without a GPU, for the GPU path's tests (cargo feature `gpu`,
# Burn's wgpu backend): Debian's Vulkan loader and Mesa's software driver, lavapipe.
#   scripts/vulkan-local.sh install   install both if either is missing
#   scripts/vulkan-local.sh status    the Vulkan devices wgpu can choose from (needs vulkan-tools)
# On a machine with a GPU, the GPU's own driver is found first; lavapipe is a CPU adapter, which
# wgpu picks only when there is no other.
set -eu

install() {
    if ! ldconfig -p | grep -q 'libvulkan\.so\.1' || ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    status) vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|deviceType' ;;
    *) echo "usage: $0 install|status" >&2; exit 2 ;;
esac
