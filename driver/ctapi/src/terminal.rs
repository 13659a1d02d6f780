//! One card terminal: a thread of its own that makes every CT-API call for it, and a
//! handle that waits for each call at most `callTimeout`.
//!
//! CT-API calls block (serial lines) and may never return. The thread that made a call
//! that timed out is abandoned: the terminal is marked failed with a text naming the call
//! that hangs (a caller queued behind it names that one, not its own), every later request
//! fails at once, and the driver process ends with a failure
//! ([`crate::ending`]) so that chipcardd restarts it with a fresh library.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use chipcard_driver::{DriverError, EventSink};
use chipcard_ipc::ReaderId;
use tracing::{debug, error, warn};

use crate::ending::end_after_hang;
use crate::ffi::{CtApi, DataResponse};

/// CT-API address of the terminal itself (CT-BCS commands).
pub const CT: u8 = 0x01;

/// A call for the terminal's thread.
enum Call {
    Init,
    Data { dad: u8, command: Vec<u8> },
    Close,
}

enum Answer {
    Code(i8),
    Data(Result<DataResponse, i8>),
}

/// A call for the terminal's thread, the text naming it, and where its answer goes.
struct Job {
    call: Call,
    what: String,
    reply: mpsc::Sender<Answer>,
}

/// The text of a CT-API return code.
pub fn code_text(code: i8) -> String {
    let name = match code {
        0 => "OK",
        -1 => "ERR_INVALID",
        -8 => "ERR_CT",
        -10 => "ERR_TRANS",
        -11 => "ERR_MEMORY",
        -127 => "ERR_HOST",
        -128 => "ERR_HTSI",
        _ => "unknown error",
    };
    format!("{code} ({name})")
}

/// A handle on one terminal's thread. Cheap to share (`Arc`); calls from several threads
/// are queued in order.
pub struct Terminal {
    /// The reader this terminal is.
    pub reader: ReaderId,
    /// The logical terminal number.
    pub ctn: u16,
    /// The port number.
    pub port: u16,
    timeout: Duration,
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The text naming the call the terminal's thread is in now, if any: when a caller's
    /// wait ends, this is the call that hangs (the caller's own may be queued behind it).
    running: Arc<Mutex<Option<String>>>,
    /// `Some(text)` once the terminal failed (a call timed out, CT_init failed).
    failed: Mutex<Option<String>>,
    events: EventSink,
    /// Set when the driver stops: a call that hangs then does not end the process.
    stopping: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Terminal {
    /// Starts the terminal's thread; no CT-API call is made yet. `stopping` is the driver's
    /// flag for "stopping now".
    pub fn spawn(
        api: Arc<CtApi>,
        reader: ReaderId,
        ctn: u16,
        port: u16,
        timeout: Duration,
        events: EventSink,
        stopping: Arc<AtomicBool>,
    ) -> std::io::Result<Terminal> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let running = Arc::new(Mutex::new(None));
        let in_call = running.clone();
        let span = tracing::Span::current();
        thread::Builder::new()
            .name(format!("ct-{ctn}"))
            .spawn(move || {
                let _span = span.enter();
                while let Ok(Job { call, what, reply }) = rx.recv() {
                    *lock(&in_call) = Some(what);
                    let answer = match call {
                        Call::Init => Answer::Code(api.init(ctn, port)),
                        Call::Data { dad, command } => Answer::Data(api.data(ctn, dad, &command)),
                        Call::Close => Answer::Code(api.close(ctn)),
                    };
                    *lock(&in_call) = None;
                    // The caller may have given up (timeout); that is its business.
                    let _ = reply.send(answer);
                }
            })?;
        Ok(Terminal {
            reader,
            ctn,
            port,
            timeout,
            jobs: Mutex::new(jobs),
            running,
            failed: Mutex::new(None),
            events,
            stopping,
        })
    }

    /// The failure text, if the terminal failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    /// Marks the terminal failed (once) and reports `ReaderError`.
    pub fn fail(&self, text: String) {
        let mut failed = lock(&self.failed);
        if failed.is_some() {
            return;
        }
        error!(reader = %self.reader, ctn = self.ctn, "{text}");
        let _ = self.events.reader_error(self.reader, text.clone());
        *failed = Some(text);
    }

    fn call(&self, call: Call, what: &str) -> Result<Answer, DriverError> {
        if let Some(text) = self.failure() {
            return Err(DriverError::reader(text));
        }
        let (reply, answer) = mpsc::channel();
        let job = Job {
            call,
            what: what.to_owned(),
            reply,
        };
        if lock(&self.jobs).send(job).is_err() {
            let text = format!("{what}: the terminal's thread is gone");
            self.fail(text.clone());
            return Err(DriverError::reader(text));
        }
        match answer.recv_timeout(self.timeout) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                let hung = lock(&self.running).clone();
                let hung = hung.as_deref().unwrap_or(what);
                let text = format!(
                    "{hung} did not return within {} ms (callTimeout); the driver restarts",
                    self.timeout.as_millis()
                );
                self.fail(text.clone());
                end_after_hang(hung, &self.stopping);
                Err(DriverError::reader(text))
            }
        }
    }

    /// `CT_init`; a failure marks the terminal failed.
    pub fn init(&self) -> Result<(), DriverError> {
        let what = format!("CT_init(ctn={}, pn={})", self.ctn, self.port);
        match self.call(Call::Init, &what)? {
            Answer::Code(0) => Ok(()),
            Answer::Code(code) | Answer::Data(Err(code)) => {
                let text = format!("{what} failed: {}", code_text(code));
                self.fail(text.clone());
                Err(DriverError::reader(text))
            }
            Answer::Data(Ok(_)) => Err(DriverError::reader("unexpected answer")),
        }
    }

    /// Makes `call` while the driver stops: waits at most `wait` (and `callTimeout`), reports
    /// no failure and does not end the process; `None` if the call did not return in time.
    fn call_stopping(&self, call: Call, what: String, wait: Duration) -> Option<Answer> {
        let (reply, answer) = mpsc::channel();
        lock(&self.jobs).send(Job { call, what, reply }).ok()?;
        answer.recv_timeout(wait.min(self.timeout)).ok()
    }

    /// `EJECT ICC` for the card in functional unit `unit` while the driver stops, waiting at
    /// most `wait`; nothing is reported. Not for a failed terminal.
    pub fn eject_stopping(&self, unit: u8, wait: Duration) {
        if self.failure().is_some() {
            return;
        }
        let call = Call::Data {
            dad: CT,
            command: vec![0x20, 0x15, unit, 0x00, 0x00],
        };
        let what = format!("CT_data(EJECT ICC, ctn={}, dad={CT})", self.ctn);
        match self.call_stopping(call, what, wait) {
            Some(Answer::Data(Ok(r))) => {
                debug!(ctn = self.ctn, unit, answer = %hex::encode_upper(&r.data), "EJECT ICC");
            }
            Some(Answer::Data(Err(code)) | Answer::Code(code)) => {
                warn!(ctn = self.ctn, unit, "EJECT ICC: {}", code_text(code));
            }
            None => warn!(ctn = self.ctn, unit, "EJECT ICC did not return; abandoned"),
        }
    }

    /// `CT_close`, waiting at most `wait` (stopping: no failure is reported). Not for a
    /// failed terminal.
    pub fn close(&self, wait: Duration) {
        if self.failure().is_some() {
            return;
        }
        let what = format!("CT_close(ctn={})", self.ctn);
        match self.call_stopping(Call::Close, what, wait) {
            Some(Answer::Code(0)) => debug!(ctn = self.ctn, "CT_close"),
            Some(Answer::Code(code)) => warn!(ctn = self.ctn, "CT_close: {}", code_text(code)),
            Some(Answer::Data(_)) => {}
            None => warn!(ctn = self.ctn, "CT_close did not return; abandoned"),
        }
    }

    /// `CT_data` to `dad`: the response bytes (a CT-API error is code 8 with its text).
    pub fn data(&self, dad: u8, command: &[u8], what: &str) -> Result<Vec<u8>, DriverError> {
        let call = Call::Data {
            dad,
            command: command.to_vec(),
        };
        let what = format!("CT_data({what}, ctn={}, dad={dad})", self.ctn);
        match self.call(call, &what)? {
            Answer::Data(Ok(response)) => Ok(response.data),
            Answer::Data(Err(code)) | Answer::Code(code) => Err(DriverError::reader(format!(
                "{what} failed: {}",
                code_text(code)
            ))),
        }
    }
}
