"""Installing the stack's Java components: Maven resolves the poms shipped in this package
(``metaproxy_devstack/java/``) into ``~/.m2`` once per machine and lays out each component's
classpath under the stack directory's ``lib/``; the Trino server tarball is unpacked there.

Maven runs on a copy of the poms in the stack directory (``java/``), so its build folders land
there too, and an install of this package from a wheel (read-only, maybe zipped) works the same.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from metaproxy_devstack.common import TRINO_VERSION, StackError


def _poms(folder: Traversable | None = None, prefix: str = "") -> dict[str, bytes]:
    """The package's pom files (and the Java sources the stack compiles) by their path under
    ``java/``."""
    folder = folder or resources.files("metaproxy_devstack") / "java"
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            found.update(_poms(entry, f"{prefix}{entry.name}/"))
        elif entry.name == "pom.xml" or entry.name.endswith(".java"):
            found[f"{prefix}{entry.name}"] = entry.read_bytes()
    return found


def poms_digest(poms: dict[str, bytes]) -> str:
    """A hash of the poms' contents, in the order of their paths."""
    digest = hashlib.sha256()
    for path in sorted(poms):
        digest.update(poms[path])
    return digest.hexdigest()


def install_java(stack_dir: Path) -> Path:
    """Lay out the Java components under ``stack_dir/lib``; returns that folder.

    A stamp holding the poms' hash makes this a no-op when nothing changed.
    """
    lib = stack_dir / "lib"
    poms = _poms()
    digest = poms_digest(poms)
    stamp = lib / ".stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (mvn) is needed to fetch the Java components; install it first")
    build = stack_dir / "java"
    shutil.rmtree(build, ignore_errors=True)
    for path, content in poms.items():
        (build / path).parent.mkdir(parents=True, exist_ok=True)
        (build / path).write_bytes(content)
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    print("stack: resolving Java components with Maven (first run downloads ~1.8 GB)...", flush=True)
    proc = subprocess.run(
        [mvn, "-B", "-q", "-f", str(build / "pom.xml"), "package", f"-Dstack.lib={lib}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise StackError(f"mvn failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    compile_notification_log_writer(build / "notify", lib / "hms-4.0")
    dist = lib / "dist" / f"trino-server-{TRINO_VERSION}.tar.gz"
    prefix = f"trino-server-{TRINO_VERSION}"
    unpack_trino(dist, lib / "trino", [f"{prefix}/lib/", f"{prefix}/bin/", f"{prefix}/plugin/hive/"])
    dist.unlink()
    stamp.write_text(digest)
    return lib


def compile_notification_log_writer(sources: Path, hms_lib: Path) -> None:
    """Build the Hive 4.0 metastore's notification-log writer (``java/notify``) into a jar on
    that metastore's classpath (Hive's own is not on Maven Central for 4.0.x)."""
    from metaproxy_devstack.procs import java_home

    bin_dir = Path(java_home(17, 21)) / "bin"
    classes = sources / "classes"
    classes.mkdir(parents=True, exist_ok=True)
    for argv in (
        [
            str(bin_dir / "javac"),
            "-nowarn",
            "-d",
            str(classes),
            "-cp",
            f"{hms_lib}/*",
            *map(str, sources.glob("*.java")),
        ],
        [
            str(bin_dir / "jar"),
            "cf",
            str(hms_lib / "metaproxy-notification-log.jar"),
            "-C",
            str(classes),
            ".",
        ],
    ):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise StackError(f"building the notification-log writer failed:\n{proc.stdout[-4000:]}")


def unpack_trino(dist: Path, dest: Path, prefixes: list[str]) -> None:
    """Unpack the members under ``prefixes`` and the files their hard links point at.

    The server tarball stores each jar once and hard-links the copies in other plugins, so the
    Hive plugin's jars may be links into plugins that are not unpacked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dist, "r:gz") as tar:
        members = tar.getmembers()
    wanted = [m for m in members if any(m.name.startswith(p) or m.name + "/" == p for p in prefixes)]
    targets = {m.linkname for m in wanted if m.islnk()}
    chosen = {m.name for m in wanted} | targets
    with tarfile.open(dist, "r:gz") as tar:
        tar.extractall(dest, members=[m for m in tar if m.name in chosen], filter="tar")
    # the link targets' own plugin folders hold partial plugins now: drop them (the hard-linked
    # copies under the wanted prefixes keep the data)
    root = dest / prefixes[0].split("/", 1)[0] / "plugin"
    keep = {p.rstrip("/").split("/")[-1] for p in prefixes if "/plugin/" in p}
    for plugin in root.iterdir():
        if plugin.name not in keep:
            shutil.rmtree(plugin)
