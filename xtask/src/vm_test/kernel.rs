//! Debian kernel packages: picking a version, `apt-get download`, the cache.

use super::*;

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub(super) struct Kernel {
    /// The Debian package (or the path given).
    pub(super) name: String,
    pub(super) image: PathBuf,
}

/// `6.1` → the newest `linux-image-6.1.…-cloud-amd64`; `6.12` → the newest 6.12 backport.
pub(super) fn pick_package(spec: &str, names: &str) -> Option<String> {
    let prefix = format!("linux-image-{spec}");
    names
        .lines()
        .map(str::trim)
        .filter(|n| n.ends_with("-cloud-amd64"))
        .filter(|n| {
            n.strip_prefix(&prefix).is_some_and(|rest| {
                let mut c = rest.chars();
                matches!(c.next(), Some('.' | '-')) && c.next().is_some_and(|d| d.is_ascii_digit())
            })
        })
        .max_by_key(|a| natural_key(a))
        .map(str::to_string)
}

/// Orders `6.1.0-9` before `6.1.0-10`.
pub(super) fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, std::mem::take(&mut text)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                num.clear();
            }
            text.push(c);
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        out.push((0, text));
    }
    out
}

pub(super) fn fetch_kernel(spec: &str, cache: &Path) -> Result<Kernel> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(Kernel {
            name: spec.to_string(),
            image: fs::canonicalize(as_path)?,
        });
    }
    let package = if spec.starts_with("linux-image-") {
        spec.to_string()
    } else {
        let query = format!("linux-image-{spec}");
        let mut found = pick_package(
            spec,
            &output(Command::new("apt-cache").args(["pkgnames", &query]))?,
        );
        if found.is_none() {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            found = pick_package(
                spec,
                &output(Command::new("apt-cache").args(["pkgnames", &query]))?,
            );
        }
        match found {
            Some(p) => p,
            None => {
                // Offline, or the package left the archive: a cached one will do.
                let cached = fs::read_dir(cache)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                pick_package(spec, &cached).with_context(|| {
                    format!("no Debian package linux-image-{spec}*-cloud-amd64 found (apt-cache pkgnames {query})")
                })?
            }
        }
    };
    let dir = cache.join(&package);
    let image = dir.join("vmlinuz");
    if image.is_file() {
        println!("vm-test: kernel {spec}: {package} (cached)");
        return Ok(Kernel {
            name: package,
            image,
        });
    }
    println!("vm-test: kernel {spec}: downloading {package}");
    let download = cache.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    run(Command::new("apt-get")
        .args(["download", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(&download))?;
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    // Only boot/ is needed (dpkg -x would unpack every module too).
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&download)
        .args(["--wildcards", "./boot/*"])
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .status()
        .context("tar")?;
    let dpkg_status = dpkg.wait()?;
    if !tar.success() || !dpkg_status.success() {
        bail!("unpacking {} failed", deb.display());
    }
    // Assembled beside the cache entry and renamed into place: a concurrent run sees either
    // nothing or a complete kernel.
    let staged = download.join("kernel");
    fs::create_dir_all(&staged)?;
    for entry in fs::read_dir(download.join("boot"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = if name.starts_with("vmlinuz-") {
            "vmlinuz"
        } else if name.starts_with("config-") {
            "config"
        } else {
            continue;
        };
        fs::rename(entry.path(), staged.join(target))?;
    }
    if !staged.join("vmlinuz").is_file() {
        let _ = fs::remove_dir_all(&download);
        bail!("{package} has no boot/vmlinuz-*");
    }
    if fs::rename(&staged, &dir).is_err() && !image.is_file() {
        let _ = fs::remove_dir_all(&download);
        bail!("could not move the kernel into {}", dir.display());
    }
    let _ = fs::remove_dir_all(&download);
    Ok(Kernel {
        name: package,
        image,
    })
}
