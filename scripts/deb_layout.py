#!/usr/bin/env python3
"""Lays out the Debian package of dmstrack from `[package.metadata.deb]` in Cargo.toml.

Called by scripts/package.sh (the documented command); standard library only.

    deb_layout.py --binary-dir target/release --staging DIR --generated DIR

Reads `cargo metadata`, copies every asset (globs expanded, `target/release/` replaced by the
binary folder of the chosen profile) into DIR with its mode, writes DEBIAN/control (Depends
from dpkg-shlibdeps for "$auto"), conffiles, md5sums and the maintainer scripts, the gzipped
changelog and a machine-readable copyright file that also names the licenses of every crate
linked into the binary. Prints the package's file name on stdout.
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cargo_metadata(no_deps):
    args = ["cargo", "metadata", "--format-version", "1", "--locked",
            "--filter-platform", host_triple()]
    if no_deps:
        args.append("--no-deps")
    out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def host_triple():
    out = subprocess.run(["rustc", "-vV"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("host: "))


def linked_crates(meta, root_id):
    """Crates reachable from dmstrack through normal (not dev, not build) dependencies."""
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    packages = {p["id"]: p for p in meta["packages"]}
    seen, todo = set(), [root_id]
    while todo:
        node = nodes[todo.pop()]
        for dep in node["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return sorted((packages[i] for i in seen), key=lambda p: (p["name"], p["version"]))


def shlib_depends(binary):
    """dpkg-shlibdeps' answer for the binary, as for "$auto" in cargo-deb."""
    if shutil.which("dpkg-shlibdeps") is None:
        sys.exit("package: dpkg-shlibdeps is missing (apt-get install dpkg-dev)")
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "debian"))
        with open(os.path.join(work, "debian", "control"), "w") as f:
            f.write("Source: dmstrack\n\nPackage: dmstrack\nArchitecture: any\n")
        out = subprocess.run(["dpkg-shlibdeps", "-O", os.path.abspath(binary)], cwd=work,
                             check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("shlibs:Depends="):
            return line.split("=", 1)[1]
    sys.exit(f"package: dpkg-shlibdeps gave no dependencies: {out!r}")


def copyright_text(package, deb, crates):
    lines = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        f"Upstream-Name: {package['name']}",
        "",
        "Files: *",
        f"Copyright: {deb['copyright']}",
        f"License: {package['license']}",
        "Comment: usr/bin/dmstrack also contains these Rust crates, linked statically",
        " (name, version: license), and SQLite (public domain) through rusqlite's bundled",
        " copy.",
        " .",
    ]
    for crate in crates:
        lines.append(f" {crate['name']} {crate['version']}: {crate.get('license') or 'see the crate'}")
    lines += [
        "",
        "License: Apache-2.0",
        " On Debian systems, the full text of the Apache License, Version 2.0 is in",
        " /usr/share/common-licenses/Apache-2.0.",
        "",
    ]
    return "\n".join(lines)


def description(package, deb):
    short = package["description"]
    paragraphs = deb.get("extended-description", "").strip().split("\n\n")
    body = []
    for i, paragraph in enumerate(paragraphs):
        if i:
            body.append(" .")
        body += [" " + l for l in textwrap.wrap(" ".join(paragraph.split()), 78)]
    return short + "\n" + "\n".join(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary-dir", required=True)
    parser.add_argument("--staging", required=True)
    args = parser.parse_args()

    meta = cargo_metadata(no_deps=False)
    package = next(p for p in meta["packages"]
                   if p["name"] == "dmstrack" and p["manifest_path"].startswith(ROOT))
    deb = package["metadata"]["deb"]
    revision = deb.get("revision", "1")
    version = package["version"] + (f"-{revision}" if revision else "")
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()

    staging = args.staging
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(os.path.join(staging, "DEBIAN"))

    binary_dir = os.path.relpath(os.path.abspath(args.binary_dir), ROOT)
    for source, dest, mode in deb["assets"]:
        source = source.replace("target/release/", binary_dir + "/", 1)
        matches = sorted(glob.glob(os.path.join(ROOT, source)))
        if not matches:
            sys.exit(f"package: asset {source} matches no file")
        for path in matches:
            target = dest + os.path.basename(path) if dest.endswith("/") else dest
            out = os.path.join(staging, target)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(path, out)
            os.chmod(out, int(mode, 8))

    binary = os.path.join(staging, "usr/bin/dmstrack")
    # Debug builds carry hundreds of MB of debug info; the package wants none of it.
    subprocess.run(["strip", "--strip-unneeded", "--remove-section=.comment",
                    "--remove-section=.note", binary], check=True)

    doc = os.path.join(staging, "usr/share/doc/dmstrack")
    os.makedirs(doc, exist_ok=True)
    with open(os.path.join(ROOT, deb["changelog"]), "rb") as f:
        changelog = f.read()
    top = changelog.split(b"\n", 1)[0].decode()
    if f"({version})" not in top:
        sys.exit(f"package: {deb['changelog']} starts with {top!r}, not version {version}: "
                 "add an entry for this version")
    # Native version (no revision): changelog.gz; with a revision: changelog.Debian.gz.
    name = "changelog.Debian.gz" if revision else "changelog.gz"
    with open(os.path.join(doc, name), "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(changelog)
    crates = linked_crates(meta, package["id"])
    with open(os.path.join(doc, "copyright"), "w") as f:
        f.write(copyright_text(package, deb, crates))

    # Directories 0755, files as listed; everything root-owned (dpkg-deb --root-owner-group).
    for folder, dirs, _ in os.walk(staging):
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o755)

    depends = deb.get("depends", "$auto")
    if "$auto" in depends:
        depends = depends.replace("$auto", shlib_depends(binary))
    installed_kib = 0
    sums = []
    for folder, _, files in os.walk(staging):
        if os.path.relpath(folder, staging).startswith("DEBIAN"):
            continue
        for name in files:
            path = os.path.join(folder, name)
            installed_kib += (os.path.getsize(path) + 1023) // 1024
            with open(path, "rb") as f:
                digest = hashlib.md5(f.read()).hexdigest()
            sums.append(f"{digest}  {os.path.relpath(path, staging)}")
    control = {
        "Package": package["name"],
        "Version": version,
        "Architecture": arch,
        "Maintainer": deb["maintainer"],
        "Installed-Size": str(installed_kib),
        "Depends": depends,
        "Section": deb.get("section", "admin"),
        "Priority": deb.get("priority", "optional"),
    }
    if package.get("homepage"):
        control["Homepage"] = package["homepage"]
    control["Description"] = description(package, deb)
    with open(os.path.join(staging, "DEBIAN", "control"), "w") as f:
        for key, value in control.items():
            f.write(f"{key}: {value}\n")
    with open(os.path.join(staging, "DEBIAN", "md5sums"), "w") as f:
        f.write("\n".join(sorted(sums, key=lambda s: s.split("  ", 1)[1])) + "\n")
    with open(os.path.join(staging, "DEBIAN", "conffiles"), "w") as f:
        for conffile in deb.get("conf-files", []):
            if not os.path.isfile(os.path.join(staging, conffile.lstrip("/"))):
                sys.exit(f"package: conffile {conffile} is not in the package")
            f.write(conffile + "\n")
    scripts = os.path.join(ROOT, deb["maintainer-scripts"])
    for script in ("preinst", "postinst", "prerm", "postrm"):
        path = os.path.join(scripts, script)
        if os.path.isfile(path):
            out = os.path.join(staging, "DEBIAN", script)
            shutil.copyfile(path, out)
            os.chmod(out, 0o755)
    for name in ("control", "md5sums", "conffiles"):
        os.chmod(os.path.join(staging, "DEBIAN", name), 0o644)

    print(f"{package['name']}_{version}_{arch}.deb")


if __name__ == "__main__":
    main()
