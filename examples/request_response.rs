//! Request/response between two processes, wrapped so a remote method reads like a local call:
//! `calc.add(2, 3)?`.
//!
//! `cargo run --example request_response` starts the calculator server as a child process
//! (`cargo run --example request_response -- serve` runs that role alone, until stdin closes)
//! and calls it. Requests and responses are plain-old-data, written and read in place.

use std::io::Read;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ringbus::{CallError, Client, Node, OpenError, ServiceBuilder};

const SERVICE: &str = "example-calc";

/// The wire format: an operation and two operands.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CalcRequest {
    op: u64,
    a: i64,
    b: i64,
}

/// The answer: a value, or an error code.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CalcResponse {
    error: u64,
    value: i64,
}

const ADD: u64 = 1;
const MUL: u64 = 2;
const DIV: u64 = 3;
const OK: u64 = 0;
const DIVISION_BY_ZERO: u64 = 1;
const UNKNOWN_OPERATION: u64 = 2;

fn service(node: &Node) -> ServiceBuilder<CalcRequest, CalcResponse> {
    node.service::<CalcRequest, CalcResponse>(SERVICE)
        .timeout(Duration::from_secs(2))
        // The client may start first: let its first call wait for the server.
        .wait_for_server(true)
}

/// What a remote calculation can return instead of a number.
#[derive(Debug)]
enum CalcError {
    /// The call itself failed (no server, timeout, server died...).
    Call(CallError),
    /// The server refused the operands.
    DivisionByZero,
    /// The server does not know the operation (another version?).
    Unknown,
}

impl std::fmt::Display for CalcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalcError::Call(e) => write!(f, "call failed: {e}"),
            CalcError::DivisionByZero => write!(f, "division by zero"),
            CalcError::Unknown => write!(f, "unknown operation"),
        }
    }
}

impl std::error::Error for CalcError {}

impl From<CallError> for CalcError {
    fn from(e: CallError) -> Self {
        CalcError::Call(e)
    }
}

/// The typed wrapper: each method is one call.
struct Calc {
    client: Client<CalcRequest, CalcResponse>,
}

impl Calc {
    fn connect(node: &Node) -> Result<Calc, OpenError> {
        Ok(Calc {
            client: service(node).client()?,
        })
    }

    fn call(&self, op: u64, a: i64, b: i64) -> Result<i64, CalcError> {
        // Written in place in the call slot, read in place by the server.
        let mut request = self.client.loan()?;
        *request = CalcRequest { op, a, b };
        let response = request.call()?;
        match response.error {
            OK => Ok(response.value),
            DIVISION_BY_ZERO => Err(CalcError::DivisionByZero),
            _ => Err(CalcError::Unknown),
        }
    }

    fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        self.call(ADD, a, b)
    }

    fn mul(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        self.call(MUL, a, b)
    }

    fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        self.call(DIV, a, b)
    }
}

fn evaluate(req: &CalcRequest) -> CalcResponse {
    let ok = |value| CalcResponse { error: OK, value };
    match req.op {
        ADD => ok(req.a.wrapping_add(req.b)),
        MUL => ok(req.a.wrapping_mul(req.b)),
        DIV if req.b == 0 => CalcResponse {
            error: DIVISION_BY_ZERO,
            value: 0,
        },
        DIV => ok(req.a.wrapping_div(req.b)),
        _ => CalcResponse {
            error: UNKNOWN_OPERATION,
            value: 0,
        },
    }
}

/// Serves until stdin closes.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new()?;
    let server = service(&node).server()?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        match server.receive_timeout(Duration::from_millis(100)) {
            Ok(request) => {
                let answer = evaluate(&request);
                // The response is written in place in the caller's slot.
                let mut response = request.loan()?;
                *response = answer;
                response.send();
            }
            Err(ringbus::ReceiveError::Timeout(_)) => {}
            Err(e) => eprintln!("skipped a request: {e}"),
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let node = Node::new()?;
    let calc = Calc::connect(&node)?;
    println!("2 + 3 = {}", calc.add(2, 3)?);
    println!("6 * 7 = {}", calc.mul(6, 7)?);
    match calc.div(1, 0) {
        Err(CalcError::DivisionByZero) => println!("1 / 0: the server says division by zero"),
        other => return Err(format!("1 / 0 gave {other:?}").into()),
    }
    drop(server.stdin.take()); // the server's cue to stop
    server.wait()?;
    Ok(())
}
