//! `bn-exp data fetch` against a tiny HTTP server on 127.0.0.1: good downloads land and verify;
//! corrupt, truncated and missing ones fail with the check that caught them and leave nothing
//! behind. No address other than the loopback one is ever contacted.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bn_exp::data::{self, Catalogue, DataError, Dataset, DatasetState};
use bn_exp::fetch::{self, FetchOptions};
use bn_exp::progress::Silent;
use flate2::Compression;
use flate2::write::GzEncoder;
use tempfile::TempDir;

use crate::common;

/// What the server answers for one path.
#[derive(Clone)]
enum Reply {
    /// 200 with the whole body.
    Body(Arc<Vec<u8>>),
    /// 200 announcing the whole body's length, then only `sent` bytes and a closed connection.
    CutShort { body: Arc<Vec<u8>>, sent: usize },
    /// 404.
    NotFound,
}

/// A bounded HTTP/1.1 server on 127.0.0.1: one request per connection, at most
/// `max_requests`, and never longer than a minute, so a failing test cannot hang.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<String>>>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>, max_requests: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut requested = Vec::new();
            while requested.len() < max_requests
                && !stop_flag.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(path) = serve_one(stream, &routes) {
                            requested.push(path);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            requested
        });
        Server {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop the server and return the paths it was asked for, in order.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Read one request and answer it; returns the requested path.
fn serve_one(stream: TcpStream, routes: &HashMap<String, Reply>) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut stream = stream;
    let reply = routes.get(&path).cloned().unwrap_or(Reply::NotFound);
    // The client may hang up first (that is what some tests provoke): ignore write errors.
    let _ = match reply {
        Reply::Body(body) => write_response(&mut stream, &body, body.len()),
        Reply::CutShort { body, sent } => write_response(&mut stream, &body[..sent], body.len()),
        Reply::NotFound => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Some(path)
}

fn write_response(stream: &mut TcpStream, body: &[u8], announced: usize) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: \
         {announced}\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// The four embedded MNIST `.gz` files, as a mirror serves them.
fn mnist_routes() -> HashMap<String, Reply> {
    common::MNIST_FILES
        .iter()
        .map(|name| {
            (
                format!("/{name}.gz"),
                Reply::Body(Arc::new(common::mnist_gz(name))),
            )
        })
        .collect()
}

fn options(server: &Server) -> FetchOptions {
    FetchOptions {
        base_url: Some(server.base_url()),
        ..FetchOptions::default()
    }
}

/// `bn-exp data fetch DATASET` from `server` into `data_dir`, to add flags to.
fn fetch_command(dataset: &str, server: &Server, data_dir: &Path) -> Command {
    let mut command = common::bn_exp();
    command
        .args(["data", "fetch", dataset, "--base-url", &server.base_url()])
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// `bn-exp data fetch mnist` from `server` into `data_dir`, through the binary, which must fail
/// without a panic and leave nothing behind. Returns what it printed.
fn failed_mnist_fetch(server: &Server, data_dir: &Path) -> String {
    let output = fetch_command("mnist", server, data_dir).output().unwrap();
    let text = common::all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(common::list_tree(data_dir), Vec::<String>::new());
    text
}

/// Run the fetch through the library and return its error.
fn fetch_error(data_dir: &Path, dataset: Dataset, server: &Server) -> anyhow::Error {
    match fetch::fetch(data_dir, dataset, &options(server), &Silent) {
        Ok(outcome) => panic!("fetch succeeded: {outcome:?}"),
        Err(err) => err,
    }
}

fn data_error(err: &anyhow::Error) -> Option<&DataError> {
    err.chain().find_map(|e| e.downcast_ref::<DataError>())
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";

#[test]
fn fetch_mnist_through_the_binary_then_skip_then_force() {
    let tmp = TempDir::new().unwrap();
    let data_dir = tmp.path().join("data");
    let server = Server::start(mnist_routes(), 8);
    let fetch_mnist = || fetch_command("mnist", &server, &data_dir);

    let output = fetch_mnist().output().unwrap();
    let text = common::all_output(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(
        data::verify_dataset(&data_dir, Dataset::Mnist, &Catalogue::published()).state(),
        DatasetState::Valid
    );
    assert_eq!(common::list_dir(&data_dir), ["mnist"]);
    let expected: Vec<String> = common::MNIST_FILES
        .iter()
        .map(|n| format!("{n}.gz"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(common::list_dir(&data_dir.join("mnist")), expected);

    // Present and valid: nothing is downloaded.
    let output = fetch_mnist().output().unwrap();
    assert!(output.status.success(), "{}", common::all_output(&output));
    assert!(common::all_output(&output).contains("already present and valid"));

    // --force downloads again.
    let output = fetch_mnist().arg("--force").output().unwrap();
    assert!(output.status.success(), "{}", common::all_output(&output));

    let requested = server.finish();
    assert_eq!(requested.len(), 8, "{requested:?}");
    assert_eq!(common::list_dir(&data_dir), ["mnist"]);
}

#[test]
fn fetch_replaces_only_the_damaged_file() {
    let tmp = TempDir::new().unwrap();
    let mnist = common::copy_mnist(tmp.path());
    fs::write(mnist.join(format!("{TRAIN_IMAGES}.gz")), b"not gzip at all").unwrap();
    let server = Server::start(mnist_routes(), 4);
    let outcome = fetch::fetch(tmp.path(), Dataset::Mnist, &options(&server), &Silent).unwrap();
    assert_eq!(outcome.fetched, [mnist.join(format!("{TRAIN_IMAGES}.gz"))]);
    assert_eq!(outcome.kept.len(), 3);
    assert_eq!(server.finish(), [format!("/{TRAIN_IMAGES}.gz")]);
    assert_eq!(
        data::verify_dataset(tmp.path(), Dataset::Mnist, &Catalogue::published()).state(),
        DatasetState::Valid
    );
    assert_eq!(common::list_dir(tmp.path()), ["mnist"]);
}

#[test]
fn corrupt_download_fails_its_checksum_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let mut routes = mnist_routes();
    let mut content = common::mnist_content(TRAIN_IMAGES);
    content[16 + 5000] ^= 0x04;
    routes.insert(
        format!("/{TRAIN_IMAGES}.gz"),
        Reply::Body(Arc::new(common::gzip(&content))),
    );
    let server = Server::start(routes, 4);

    let err = fetch_error(tmp.path(), Dataset::Mnist, &server);
    assert!(
        matches!(data_error(&err), Some(DataError::ChecksumMismatch { .. })),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains(TRAIN_IMAGES), "{err:#}");
    assert_eq!(common::list_tree(tmp.path()), Vec::<String>::new());

    // The same through the binary: non-zero exit, the check named, nothing left.
    let text = failed_mnist_fetch(&server, tmp.path());
    assert!(text.contains("checksum mismatch"), "{text}");
    drop(server);
}

#[test]
fn download_cut_short_of_its_content_length_is_truncated_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let data_dir = tmp.path().join("new-data");
    let mut routes = mnist_routes();
    let body = Arc::new(common::mnist_gz(TRAIN_IMAGES));
    let sent = body.len() / 3;
    routes.insert(
        format!("/{TRAIN_IMAGES}.gz"),
        Reply::CutShort { body, sent },
    );
    let server = Server::start(routes, 4);

    let err = fetch_error(&data_dir, Dataset::Mnist, &server);
    let message = format!("{err:#}");
    assert!(message.contains("truncated"), "{message}");
    assert!(message.contains(TRAIN_IMAGES), "{message}");
    // Not even the data folder the fetch had to create is left.
    assert_eq!(common::list_tree(tmp.path()), Vec::<String>::new());
}

#[test]
fn truncated_file_served_whole_fails_the_content_check_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let mut routes = mnist_routes();
    let gz = common::mnist_gz(TRAIN_IMAGES);
    routes.insert(
        format!("/{TRAIN_IMAGES}.gz"),
        Reply::Body(Arc::new(gz[..gz.len() - 1000].to_vec())),
    );
    let server = Server::start(routes, 4);
    let err = fetch_error(tmp.path(), Dataset::Mnist, &server);
    assert!(
        matches!(data_error(&err), Some(DataError::Truncated { .. })),
        "{err:#}"
    );
    assert_eq!(common::list_tree(tmp.path()), Vec::<String>::new());
}

#[test]
fn missing_file_on_the_server_is_a_clear_404_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let mut routes = mnist_routes();
    routes.remove("/t10k-labels-idx1-ubyte.gz");
    let server = Server::start(routes, 4);

    let text = failed_mnist_fetch(&server, tmp.path());
    assert!(text.contains("404"), "{text}");
    assert!(text.contains("t10k-labels-idx1-ubyte.gz"), "{text}");
}

#[test]
fn base_url_must_be_http() {
    let tmp = TempDir::new().unwrap();
    let options = FetchOptions {
        base_url: Some("ftp://127.0.0.1/mnist".into()),
        ..FetchOptions::default()
    };
    let err = fetch::fetch(tmp.path(), Dataset::Mnist, &options, &Silent).unwrap_err();
    assert!(err.to_string().contains("http://"), "{err:#}");
    assert_eq!(common::list_tree(tmp.path()), Vec::<String>::new());
}

/// `cifar-10-binary.tar.gz` as Toronto publishes it (members under `cifar-10-batches-bin/`,
/// plus a readme bn-exp ignores), built from the small CIFAR-format set in `set`.
fn cifar_archive(set: &common::SmallCifar) -> Arc<Vec<u8>> {
    let encoder = GzEncoder::new(Vec::new(), Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    for name in common::CIFAR_FILES {
        tar.append_path_with_name(set.dir.join(name), format!("cifar-10-batches-bin/{name}"))
            .unwrap();
    }
    let readme = b"<html>CIFAR-10</html>";
    let mut header = tar::Header::new_gnu();
    header.set_size(readme.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "cifar-10-batches-bin/readme.html", &readme[..])
        .unwrap();
    Arc::new(tar.into_inner().unwrap().finish().unwrap())
}

fn cifar_routes(archive: Reply) -> HashMap<String, Reply> {
    HashMap::from([(format!("/{}", fetch::CIFAR_ARCHIVE), archive)])
}

#[test]
fn fetch_cifar_archive_through_the_binary_extracts_and_verifies() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(&tmp.path().join("source"));
    let data_dir = tmp.path().join("data");
    let server = Server::start(cifar_routes(Reply::Body(cifar_archive(&set))), 1);
    let output = fetch_command("cifar10", &server, &data_dir)
        .env(data::CATALOGUE_ENV, &set.catalogue_path)
        .output()
        .unwrap();
    let text = common::all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("7 file(s) downloaded"), "{text}");
    assert_eq!(
        data::verify_dataset(&data_dir, Dataset::Cifar10, &set.catalogue).state(),
        DatasetState::Valid
    );
    assert_eq!(common::list_dir(&data_dir), ["cifar-10-batches-bin"]);
    let mut expected: Vec<String> = common::CIFAR_FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        common::list_dir(&data_dir.join("cifar-10-batches-bin")),
        expected
    );
    for name in common::CIFAR_FILES {
        assert_eq!(
            fs::read(data_dir.join("cifar-10-batches-bin").join(name)).unwrap(),
            fs::read(set.dir.join(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(server.finish().len(), 1);
}

#[test]
fn cifar_archive_with_a_changed_byte_fails_its_checksum_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(&tmp.path().join("source"));
    let mut batch = fs::read(set.dir.join("data_batch_4.bin")).unwrap();
    batch[3073 * 2 + 100] ^= 0x01;
    fs::write(set.dir.join("data_batch_4.bin"), &batch).unwrap();
    let data_dir = tmp.path().join("data");
    let server = Server::start(cifar_routes(Reply::Body(cifar_archive(&set))), 1);
    let options = FetchOptions {
        catalogue: set.catalogue.clone(),
        ..options(&server)
    };
    let err = fetch::fetch(&data_dir, Dataset::Cifar10, &options, &Silent).unwrap_err();
    assert!(
        matches!(data_error(&err), Some(DataError::ChecksumMismatch { .. })),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("data_batch_4.bin"), "{err:#}");
    assert!(!data_dir.exists() || common::list_tree(&data_dir).is_empty());
}

#[test]
fn truncated_cifar_archive_fails_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(&tmp.path().join("source"));
    let data_dir = tmp.path().join("data");
    let archive = cifar_archive(&set);
    // Served whole but cut at 60%: the gzip stream ends early and members are missing.
    let cut = Arc::new(archive[..archive.len() * 6 / 10].to_vec());
    let server = Server::start(cifar_routes(Reply::Body(cut)), 1);
    let options = FetchOptions {
        catalogue: set.catalogue.clone(),
        ..options(&server)
    };
    let err = fetch::fetch(&data_dir, Dataset::Cifar10, &options, &Silent).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("truncated") || data_error(&err).is_some(),
        "{message}"
    );
    assert!(!data_dir.exists() || common::list_tree(&data_dir).is_empty());
}
