#!/usr/bin/env python3
"""Checks what the Kubernetes schemas cannot: the fields dmstrack's examples rely on.

Run by scripts/validate-k8s.sh (in its venv, which has PyYAML) after kubernetes-validate:

    validate_k8s.py --binary target/debug/dmstrack config/k8s-sidecar.yaml config/k8s-job.yaml

Every document must be one of the kinds and API versions below. Then, for the example as a
whole: the sidecar is a native one (an init container with restartPolicy Always), probes
/healthz over HTTP on its named port, has a startup probe and no readiness probe, runs
non-root with a read-only root filesystem; STATE_DIRECTORY and DMSTRACK_CONFIG point into
the mounted volumes; the Namespace carries the RRSA injection label and the ServiceAccount
the role annotation; the PodMonitor and the NetworkPolicy select the pod and name ports that
exist; the Job's podFailurePolicy does not retry exits 1 and 78; both name the same image as
the Containerfile's version; and the ConfigMap's config.toml passes `dmstrack check`.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KNOWN = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
}

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        for line in f:
            if line.startswith("version = "):
                return line.split('"')[1]
    raise SystemExit("no version in Cargo.toml")


def by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    return found


def container(pod_spec, name):
    for c in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        if c["name"] == name:
            return c
    return None


def mount_for(pod_spec, c, path):
    """The volume mounted in container c at a folder that holds path."""
    for m in c.get("volumeMounts", []):
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"):
            volume = next(v for v in pod_spec["volumes"] if v["name"] == m["name"])
            return m, volume
    return None, None


def check_dmstrack_container(where, pod_spec, c, docs):
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    state = env.get("STATE_DIRECTORY")
    if check(state, f"{where}: STATE_DIRECTORY is not set"):
        m, volume = mount_for(pod_spec, c, state)
        check(m and not m.get("readOnly") and "persistentVolumeClaim" in volume,
              f"{where}: STATE_DIRECTORY {state} is not on a writable persistent volume")
    config = env.get("DMSTRACK_CONFIG")
    if check(config, f"{where}: DMSTRACK_CONFIG is not set"):
        m, volume = mount_for(pod_spec, c, config)
        check(m and "configMap" in volume,
              f"{where}: DMSTRACK_CONFIG {config} is not in a mounted ConfigMap")
        if m and "configMap" in volume:
            names = [d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")]
            check(volume["configMap"]["name"] in names or len(docs) < 3,
                  f"{where}: ConfigMap {volume['configMap']['name']} is not defined")
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is not read-only")
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
    check(pod_spec.get("securityContext", {}).get("runAsNonRoot") is True,
          f"{where}: the pod may run as root")
    check(c["image"] == f"registry.example.com/dmstrack:{cargo_version()}",
          f"{where}: image {c['image']} is not registry.example.com/dmstrack:{cargo_version()}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()

    docs = []
    for path in args.manifests:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                doc["_file"] = os.path.basename(path)
                check((doc.get("apiVersion"), doc.get("kind")) in KNOWN,
                      f"{path}: unexpected {doc.get('apiVersion')} {doc.get('kind')}")
                check(doc.get("metadata", {}).get("namespace", "dmstrack") == "dmstrack"
                      or doc["kind"] == "Namespace",
                      f"{path}: {doc['kind']} is outside the dmstrack namespace")
                docs.append(doc)

    namespaces = by_kind(docs, "Namespace")
    if check(len(namespaces) == 1, "one Namespace expected"):
        labels = namespaces[0]["metadata"].get("labels", {})
        check(labels.get("pod-identity.alibabacloud.com/injection") == "on",
              "the Namespace lacks pod-identity.alibabacloud.com/injection: \"on\" (RRSA)")
    for sa in by_kind(docs, "ServiceAccount"):
        check("pod-identity.alibabacloud.com/role-name" in sa["metadata"].get("annotations", {}),
              "the ServiceAccount names no RAM role")

    deployments = by_kind(docs, "Deployment")
    pod_labels = {}
    sidecar_ports = {}
    if check(len(deployments) == 1, "one Deployment expected"):
        d = deployments[0]
        check(d["spec"].get("replicas") == 1 and d["spec"]["strategy"]["type"] == "Recreate",
              "Deployment: one replica with the Recreate strategy (one writer per state)")
        template = d["spec"]["template"]
        pod_labels = template["metadata"]["labels"]
        spec = template["spec"]
        sidecar = next((c for c in spec.get("initContainers", []) if c["name"] == "dmstrack"), None)
        if check(sidecar, "Deployment: no dmstrack init container"):
            where = "Deployment dmstrack sidecar"
            check(sidecar.get("restartPolicy") == "Always", f"{where}: not a native sidecar")
            sidecar_ports = {p["name"]: p["containerPort"] for p in sidecar.get("ports", [])}
            for probe in ("livenessProbe", "startupProbe"):
                http = sidecar.get(probe, {}).get("httpGet", {})
                check(http.get("path") == "/healthz" and http.get("port") in sidecar_ports,
                      f"{where}: {probe} is not an httpGet of /healthz on a named port")
            check("readinessProbe" not in sidecar,
                  f"{where}: a readiness probe would make the app's pod NotReady with DMS down")
            check_dmstrack_container(where, spec, sidecar, docs)

    for monitor in by_kind(docs, "PodMonitor"):
        spec = monitor["spec"]
        wanted = spec.get("selector", {}).get("matchLabels", {})
        check(wanted and all(pod_labels.get(k) == v for k, v in wanted.items()),
              "PodMonitor: its selector does not match the Deployment's pods")
        for endpoint in spec.get("podMetricsEndpoints", []):
            check(endpoint.get("port") in sidecar_ports,
                  f"PodMonitor: port {endpoint.get('port')} is not a port of the sidecar")
            check(endpoint.get("path", "/metrics") == "/metrics", "PodMonitor: path is not /metrics")

    for policy in by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        wanted = spec["podSelector"].get("matchLabels", {})
        check(all(pod_labels.get(k) == v for k, v in wanted.items()),
              "NetworkPolicy: its podSelector does not match the Deployment's pods")
        egress_ports = {(p.get("protocol", "TCP"), p["port"])
                        for rule in spec.get("egress", []) for p in rule.get("ports", [])}
        for needed in [("UDP", 53), ("TCP", 443)]:
            check(needed in egress_ports, f"NetworkPolicy: egress {needed} is not allowed")
        ingress_ports = {p["port"] for rule in spec.get("ingress", []) for p in rule.get("ports", [])}
        check(set(sidecar_ports.values()) <= ingress_ports,
              "NetworkPolicy: the metrics port is not open to scrapes")

    for job in by_kind(docs, "Job"):
        spec = job["spec"]["template"]["spec"]
        c = container(spec, "dmstrack")
        if check(c, "Job: no dmstrack container"):
            check_dmstrack_container("Job dmstrack", spec, c, docs)
            check(c.get("args", [])[:2] == ["run", "--once"], "Job: does not run `run --once`")
        rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
        final = [r for r in rules if r["action"] == "FailJob"]
        check(any(sorted(r["onExitCodes"]["values"]) == [1, 78] for r in final),
              "Job: podFailurePolicy does not fail the Job on exit 1 and 78")

    # The ConfigMap's config, as dmstrack reads it: no state/archive folder in it (they come
    # from STATE_DIRECTORY), the listener on the port the probes use, and `dmstrack check`
    # passes with the RRSA variables the webhook injects (stand-ins; nothing is contacted).
    for cm in by_kind(docs, "ConfigMap"):
        text = cm["data"]["config.toml"]
        import tomllib
        config = tomllib.loads(text)
        check("dir" not in config.get("state", {}) and "dir" not in config.get("archive", {}),
              "ConfigMap: config.toml sets state.dir or archive.dir; STATE_DIRECTORY would lose")
        listen = config.get("http", {}).get("listen", "")
        check(listen.endswith(":" + str(sidecar_ports.get("http", 0))),
              f"ConfigMap: http.listen {listen!r} is not the sidecar's http port")
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "config.toml")
            with open(path, "w") as f:
                f.write(text)
            token = os.path.join(work, "token")
            with open(token, "w") as f:
                f.write("stand-in")
            env = {
                "PATH": os.environ.get("PATH", ""),
                "STATE_DIRECTORY": os.path.join(work, "state"),
                "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
                "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/dmstrack-archiver",
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/ack-rrsa",
                "ALIBABA_CLOUD_OIDC_TOKEN_FILE": token,
            }
            result = subprocess.run([args.binary, "check", "-c", path], env=env,
                                    capture_output=True, text=True)
            check(result.returncode == 0,
                  f"ConfigMap: dmstrack check failed ({result.returncode}): "
                  f"{result.stdout}{result.stderr}")

    if problems:
        for problem in problems:
            print(f"validate-k8s: {problem}", file=sys.stderr)
        sys.exit(1)
    kinds = sorted({f"{d['kind']}" for d in docs})
    print(f"validate_k8s.py: {len(docs)} objects ({', '.join(kinds)}) fit together and with "
          "dmstrack; the ConfigMap's config passes dmstrack check")


if __name__ == "__main__":
    main()
