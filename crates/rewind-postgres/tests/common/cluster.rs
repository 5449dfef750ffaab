//! A PostgreSQL cluster of a test's own: `initdb` into a temporary directory,
//! started with `pg_ctl` on a free loopback port with its socket inside that
//! directory, so a test can stop and start its server (and make it a read-only
//! standby, then promote it) without touching the shared server. Used by this
//! crate's reconnect test and by the bank's outage test (which includes this file
//! by path, so the two share one harness).
//!
//! The server binaries refuse to run as root: as root, the directory is handed to
//! the `postgres` user and the binaries run through `runuser`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory of its own under the system's temporary directory, removed on drop
/// (made here so both crates using this file need nothing more than `uuid`).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let path = std::env::temp_dir().join(format!("rewind-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&path).expect("temporary directory");
        Scratch(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL cluster in a temporary directory, stopped (immediately) on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: Scratch,
    port: u16,
    /// Run the server binaries as this user (they refuse to run as root).
    run_as: Option<String>,
}

/// The directory holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin`,
/// else the first on `PATH`.
pub fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    versions.sort();
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    versions
        .into_iter()
        .rev()
        .map(|(_, bin)| bin)
        .chain(on_path)
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

impl Cluster {
    /// `initdb` and start on a free port, or `None` (after a notice) when this
    /// machine cannot run a cluster of its own.
    pub fn create(test: &str) -> Option<Cluster> {
        let Some(bin) = server_binaries() else {
            eprintln!("skipped {test}: the PostgreSQL server binaries (initdb, pg_ctl) are not installed");
            return None;
        };
        let dir = Scratch::new();
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        let run_as = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
            // initdb and postgres refuse root: hand the directory to the postgres user.
            let owner = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).output();
            if !owner.is_ok_and(|o| o.status.success()) {
                eprintln!("skipped {test}: running as root and there is no `postgres` user to run a cluster as");
                return None;
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let cluster = Cluster { bin, dir, port, run_as };
        std::fs::create_dir(cluster.socket_dir()).expect("socket directory");
        if cluster.run_as.is_some() {
            Command::new("chown").args(["postgres:"]).arg(cluster.socket_dir()).status().expect("chown");
        }
        let data = cluster.data_dir();
        let init =
            cluster.run("initdb", &["-D", path(&data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        assert!(init.status.success(), "initdb failed:\n{}", output_text(&init));
        cluster.start();
        Some(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let binary = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    pub fn start(&self) {
        self.start_with("");
    }

    /// Starts the cluster with more server options (`-c name=value` words).
    pub fn start_with(&self, extra_options: &str) {
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=60 {extra_options}",
            self.port,
            self.socket_dir().display()
        );
        let log = self.dir.path().join("server.log");
        let started = self.run(
            "pg_ctl",
            &["-D", path(&self.data_dir()), "-l", path(&log), "-w", "-t", "30", "-o", &options, "start"],
        );
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(started.status.success(), "pg_ctl start failed:\n{}\n{log}", output_text(&started));
    }

    /// Starts the cluster as a hot standby with no primary: it accepts connections
    /// and reads, and refuses every write, until [`Cluster::promote`].
    pub fn start_read_only(&self) {
        let signal = self.data_dir().join("standby.signal");
        std::fs::write(&signal, "").expect("standby.signal");
        if self.run_as.is_some() {
            Command::new("chown").arg("postgres:").arg(&signal).status().expect("chown");
        }
        self.start();
    }

    pub fn promote(&self) {
        let promoted = self.run("pg_ctl", &["-D", path(&self.data_dir()), "-w", "-t", "30", "promote"]);
        assert!(promoted.status.success(), "pg_ctl promote failed:\n{}", output_text(&promoted));
    }

    pub fn stop(&self, mode: &str) -> bool {
        self.run("pg_ctl", &["-D", path(&self.data_dir()), "-m", mode, "-w", "-t", "30", "stop"]).status.success()
    }

    /// Writes a file only the server's user may read (a TLS key) into the cluster's
    /// directory; returns its path.
    pub fn private_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let file = self.dir.path().join(name);
        std::fs::write(&file, contents).expect("write private file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        if self.run_as.is_some() {
            Command::new("chown").arg("postgres:").arg(&file).status().expect("chown");
        }
        file
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Only this cluster's data directory is named: the shared server is never touched.
        self.stop("immediate");
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}
