//! The initramfs: a newc cpio archive written here.

use super::*;

pub(super) mod cpio {
    use std::io::{self, Write};

    pub struct Writer<W: Write> {
        out: W,
        ino: u32,
        pub written: u64,
    }

    impl<W: Write> Writer<W> {
        pub fn new(out: W) -> Self {
            Writer {
                out,
                ino: 1,
                written: 0,
            }
        }

        fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.out.write_all(bytes)?;
            self.written += bytes.len() as u64;
            Ok(())
        }

        fn pad(&mut self) -> io::Result<()> {
            let n = (4 - (self.written % 4) as usize) % 4;
            self.put(&[0u8; 3][..n])
        }

        /// One entry: `mode` includes the file type bits; `rdev` for device nodes.
        fn entry(
            &mut self,
            name: &str,
            mode: u32,
            data: &[u8],
            rdev: (u32, u32),
        ) -> io::Result<()> {
            let name = name.trim_start_matches('/');
            let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
            let header = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                self.ino,
                mode,
                0, // uid
                0, // gid
                nlink,
                0, // mtime
                data.len(),
                0, // devmajor
                0, // devminor
                rdev.0,
                rdev.1,
                name.len() + 1,
                0, // check
            );
            self.ino += 1;
            self.put(header.as_bytes())?;
            self.put(name.as_bytes())?;
            self.put(&[0])?;
            self.pad()?;
            self.put(data)?;
            self.pad()
        }

        pub fn dir(&mut self, name: &str) -> io::Result<()> {
            self.entry(name, 0o040755, &[], (0, 0))
        }

        pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
            self.entry(name, 0o100000 | perm, data, (0, 0))
        }

        pub fn char_dev(
            &mut self,
            name: &str,
            perm: u32,
            major: u32,
            minor: u32,
        ) -> io::Result<()> {
            self.entry(name, 0o020000 | perm, &[], (major, minor))
        }

        pub fn finish(mut self) -> io::Result<W> {
            self.entry("TRAILER!!!", 0, &[], (0, 0))?;
            // The kernel reads the archive in 512-byte blocks' worth; pad like cpio(1) does.
            let n = (512 - (self.written % 512) as usize) % 512;
            self.put(&vec![0u8; n])?;
            self.out.flush()?;
            Ok(self.out)
        }
    }
}

pub(super) fn write_initramfs(path: &Path, suite: &Path, interceptor: &Path) -> Result<u64> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = cpio::Writer::new(std::io::BufWriter::new(file));
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
        w.dir(d)?;
    }
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, &fs::read(suite)?)?;
    w.file("bin/interceptor", 0o755, &fs::read(interceptor)?)?;
    w.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    w.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    let written = w.written;
    w.finish()?;
    Ok(written)
}
