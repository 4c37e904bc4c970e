#!/usr/bin/env python3
"""Checks of the deploy kit that need no container engine (scripts/test.sh runs it; under a second).

Every YAML file under deploy/ parses; the Kubernetes manifests have what docs/deploy.md promises (hostNetwork,
probes on /readyz and /healthz, the ports the config listens on, the ConfigMap and Secret the Deployment uses);
compose.yaml runs Courier with PostgreSQL 15 and no live Redis yet. The TOML side (every config passes the
server's loader, the ConfigMap equals deploy/k8s/courier.toml) is signaling/tests/deploy_configs.rs.
"""
import pathlib
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent


def fail(msg):
    print(f"deploy/check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def load_all():
    docs = {}
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        rel = path.relative_to(DEPLOY.parent)
        try:
            docs[str(rel)] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{rel} does not parse: {e}")
    if "deploy/compose.yaml" not in docs:
        fail("deploy/compose.yaml not found; is the walk broken?")
    return docs


def check_k8s(docs):
    objects = {}
    for rel, items in docs.items():
        if not rel.startswith("deploy/k8s/"):
            continue
        for o in items:
            for key in ("apiVersion", "kind", "metadata"):
                if key not in o:
                    fail(f"{rel}: an object without {key}")
            objects[(o["kind"], o["metadata"]["name"])] = o
    for want in [("Deployment", "courier"), ("Service", "courier"), ("ConfigMap", "courier-config"),
                 ("Secret", "courier-secrets"), ("Namespace", "courier"), ("PersistentVolumeClaim", "courier-data")]:
        if want not in objects:
            fail(f"deploy/k8s has no {want[0]} {want[1]}")
    dep = objects[("Deployment", "courier")]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if dep["spec"]["selector"]["matchLabels"].items() - labels.items():
        fail("the Deployment's selector does not match its pod labels")
    if objects[("Service", "courier")]["spec"]["selector"].items() - labels.items():
        fail("the Service's selector does not match the pod labels")
    if pod.get("hostNetwork") is not True:
        fail("the Deployment must use hostNetwork (one UDP port per node, the node's address announced)")
    (c,) = pod["containers"]
    ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
    if ports != {(7880, "TCP"), (7881, "UDP")}:
        fail(f"container ports {ports}, want 7880/TCP and 7881/UDP")
    if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail("readiness must probe /readyz and liveness /healthz")
    if c["args"][:3] != ["serve", "--config", "/etc/courier/courier.toml"]:
        fail(f"container args {c['args']}")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    if volumes[mounts["/etc/courier"]].get("configMap", {}).get("name") != "courier-config":
        fail("/etc/courier must be the ConfigMap courier-config")
    if "courier.toml" not in objects[("ConfigMap", "courier-config")]["data"]:
        fail("the ConfigMap has no courier.toml")
    secret_refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    if secret_refs != ["courier-secrets"]:
        fail(f"the keys come from the Secret courier-secrets, not {secret_refs}")
    if "COURIER_KEYS" not in objects[("Secret", "courier-secrets")]["stringData"]:
        fail("the Secret has no COURIER_KEYS")


def check_compose(docs):
    (compose,) = docs["deploy/compose.yaml"]
    services = compose["services"]
    if set(services) != {"courier", "postgres"}:
        fail(f"compose services {sorted(services)}: want courier and postgres (Redis stays commented out)")
    if not str(services["postgres"]["image"]).startswith("postgres:15"):
        fail("the chat store is PostgreSQL 15")
    courier = services["courier"]
    if courier.get("network_mode") != "host" and not courier.get("ports"):
        fail("courier needs host networking or published ports")
    if courier["build"]["dockerfile"] != "deploy/Dockerfile":
        fail("courier builds deploy/Dockerfile")
    for vol in courier["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./") and src != "./certs" and not (DEPLOY / src).exists():
            fail(f"compose mounts {src}, which does not exist")


def main():
    docs = load_all()
    check_k8s(docs)
    check_compose(docs)
    print(f"deploy/check.py: {len(docs)} YAML files ok")


if __name__ == "__main__":
    main()
