//! The tools `make tools` installs or requires (the Python venv, Java, Maven, scripts of
//! `infra/dev/`): finding them, and failing a test that needs one — naming it and how to get it —
//! when it is missing, never letting the test pass without it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::repo_root;

/// Panics, naming the tool and how to get it, unless `program version_arg` runs and succeeds.
/// For the tools `make test` installs (`make tools`) or requires: a test that needs one fails
/// without it, never passes.
pub fn require_tool(program: &str, version_arg: &str, what: &str) {
    match Command::new(program)
        .arg(version_arg)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs {what}, but `{program} {version_arg}` failed ({}):\n{}\n\
             install it, then run `make tools`",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "this test needs {what}, but `{program}` cannot be run ({e}); install it, then run \
             `make tools`"
        ),
    }
}

/// A script of infra/dev/, which the tests need; panics when the checkout lacks it.
pub fn dev_script(name: &str) -> PathBuf {
    let script = repo_root().join("infra/dev").join(name);
    assert!(
        script.exists(),
        "{} is missing: this test cannot run without it",
        script.display()
    );
    script
}

/// The tools venv's python (pyarrow, duckdb, boto3, moto, schemathesis), created on first use.
pub fn python() -> PathBuf {
    require_tool("python3", "--version", "Python 3 (for the tools venv)");
    let out = Command::new("bash")
        .arg(dev_script("python-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run infra/dev/python-env.sh");
    assert!(
        out.status.success(),
        "infra/dev/python-env.sh failed (its output is above): this test needs the tools venv \
         (pyarrow, duckdb, boto3, moto, schemathesis from infra/dev/requirements.txt); run `make tools`"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A program the tools venv installs (`schemathesis`, `moto_server`, ...), beside its python.
pub fn venv_program(name: &str) -> PathBuf {
    let program = python().with_file_name(name);
    assert!(
        program.exists(),
        "{} is missing from the tools venv: run `make tools`",
        program.display()
    );
    program
}

/// Starts (or finds running) moto's S3 server (`infra/dev/s3.sh`, from the tools venv) and
/// returns its endpoint; without the venv the test fails, saying so.
pub fn s3_endpoint() -> String {
    let script = dev_script("s3.sh");
    // The venv first, so a missing venv is reported as such.
    python();
    start_dev_server(
        script,
        "it needs moto_server from the tools venv (`make tools`)",
    )
}

/// Starts (or finds running) Hadoop's MiniDFSCluster (`infra/dev/hdfs.sh`) and returns its
/// `hdfs://` URL. It needs Java 17+, and Maven for the first build of the tools (`make tools`);
/// without them the test fails, saying so.
pub fn hdfs_url() -> String {
    let script = dev_script("hdfs.sh");
    require_tool(
        "java",
        "-version",
        "Java 17+ (for Hadoop's MiniDFSCluster, infra/dev/hdfs.sh)",
    );
    start_dev_server(
        script,
        "it needs Java 17+ and the HDFS tools that `make tools` builds with Maven",
    )
}

/// Runs `<script> start` (an `infra/dev/` server script: starts the server or finds it
/// running) and returns what it prints, the server's address; fails the test with `needs` and
/// the script's errors when it cannot.
fn start_dev_server(script: PathBuf, needs: &str) -> String {
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("run {} start: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} start failed; {needs}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
