//! A `control monitor` run as a child process, its output collected line by line, and the
//! datapath flag that says whether anyone listens.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use control::{datapath::maps, instance::Instance};
use rig::Sandbox;
use serde_json::Value;
use weir_common::config::flags;

/// A running `control monitor --json`, its stdout collected line by line.
pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(s: &Sandbox, extra: &[&str]) -> Self {
        let mut a = vec!["--json"];
        a.extend_from_slice(extra);
        Self::spawn(s, &a)
    }

    /// `control monitor` with its human-readable output (read it with `lines`).
    pub fn start_text(s: &Sandbox, extra: &[&str]) -> Self {
        Self::spawn(s, extra)
    }

    pub fn spawn(s: &Sandbox, args: &[&str]) -> Self {
        let mut a = vec!["monitor"];
        a.extend_from_slice(args);
        let mut child = s
            .command(&a)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning control monitor");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line so far, parsed (a line that is not one JSON object fails the test).
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| panic!("monitor printed a non-JSON line: {l:?}"))
            })
            .collect()
    }

    /// Calls `poke` (which makes traffic) until `done` holds for the events seen or `timeout`.
    pub fn poke_until(
        &self,
        timeout: Duration,
        mut poke: impl FnMut(),
        done: impl Fn(&[Value]) -> bool,
    ) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if done(&self.events()) {
                return true;
            }
            poke();
            thread::sleep(Duration::from_millis(100));
        }
        done(&self.events())
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (at most `timeout`, then kills) and returns the exit status, events and stderr.
    pub fn finish(self, timeout: Duration) -> (ExitStatus, Vec<Value>, String) {
        let (status, _, err, evs) = self.finish_raw(timeout, true);
        (status, evs, err)
    }

    /// Like `finish`, for the human-readable output: exit status, lines and stderr.
    pub fn finish_text(self, timeout: Duration) -> (ExitStatus, Vec<String>, String) {
        let (status, lines, err, _) = self.finish_raw(timeout, false);
        (status, lines, err)
    }

    pub fn finish_raw(
        mut self,
        timeout: Duration,
        json: bool,
    ) -> (ExitStatus, Vec<String>, String, Vec<Value>) {
        let start = Instant::now();
        while start.elapsed() < timeout && self.running() {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("waiting for monitor");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let evs = if json { self.events() } else { Vec::new() };
        (status, self.lines(), err, evs)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the datapath currently reports drops to the ring buffer.
pub fn listening(s: &Sandbox) -> bool {
    let inst = Instance::new(&s.state_dir).unwrap();
    let cfg = maps::read_config(&inst).unwrap().expect("config");
    cfg.flags & flags::EVENTS != 0
}
