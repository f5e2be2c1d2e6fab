//! The echo server that stands in for an allowed (or denied) upstream.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use super::{fail, Fail};

/// A line echo server on a loopback address: replies `echo:<line>`, counts connections.
pub struct Echo {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start(ip: &str) -> Result<Echo, Fail> {
        let listener =
            TcpListener::bind((ip, 0)).map_err(|e| fail(format!("bind echo on {ip}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail(format!("echo address: {e}")))?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let Ok(clone) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(clone);
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        if stream.write_all(format!("echo:{line}").as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        Ok(Echo {
            addr,
            accepted,
            stop,
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Wake the accept loop so that its thread (and the listening socket) goes away.
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}
