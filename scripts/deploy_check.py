"""``make deploy-check``: render every kustomize overlay under deploy/k8s/overlays and validate every object.

Rendering uses ``kubectl kustomize`` when kubectl is on PATH, otherwise :func:`render` below, a renderer for
the subset of kustomize the overlays use (keep them within it): ``resources`` (files and directories with a
kustomization), ``namespace``, ``labels`` (``pairs``, added to ``metadata.labels`` only), ``images``
(``name``/``newName``/``newTag``) and ``patches`` given by ``path`` (strategic merge: maps merged, lists of
maps merged by ``name``, other values replaced; targets found by kind and name).

Objects of Kubernetes' own kinds are validated against the Kubernetes OpenAPI schemas with
``kubernetes-validate`` (strict: unknown fields are errors). The custom resources (cert-manager,
CloudNativePG, Prometheus Operator) are validated against the minimal JSON schemas in deploy/k8s/schemas;
a kind in neither is an error. Then a few rules of our own: every container of a Deployment has readiness
and liveness probes and resource requests and limits, and every pod runs as non-root.

Exit status 0 when every overlay renders and every object is valid, 1 otherwise (each problem printed).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
DEFAULT_VERSION = "1.32"
#: Custom resources and the schema file each is checked against.
CUSTOM = {
    ("cert-manager.io/v1", "Issuer"): "issuer.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-cluster.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
}
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"})

Obj = dict[str, Any]


class RenderError(Exception):
    pass


# ------------------------------------------------------------------------------------------------- render


def _load_docs(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge for the fields the overlays patch."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        merged = [dict(i) for i in base]
        for item in patch:
            for index, existing in enumerate(merged):
                if existing["name"] == item["name"]:
                    merged[index] = _merge(existing, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _containers(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
        "template", {}
    ).get("spec", {})
    for key in ("initContainers", "containers"):
        yield from pod.get(key) or []


def render(directory: Path) -> list[Obj]:
    """The objects the kustomization in ``directory`` produces (the subset described in the module doc)."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    supported = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
    unknown = set(spec) - supported
    if unknown:
        raise RenderError(f"{kfile}: not supported by the Python renderer: {', '.join(sorted(unknown))}")
    objects: list[Obj] = []
    for entry in spec.get("resources") or []:
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else _load_docs(path))
    for patch_ref in spec.get("patches") or []:
        if set(patch_ref) != {"path"}:
            raise RenderError(f"{kfile}: only patches given by path are supported: {patch_ref}")
        for patch in _load_docs(directory / patch_ref["path"]):
            key = (patch.get("kind"), patch.get("metadata", {}).get("name"))
            targets = [i for i, o in enumerate(objects) if (o.get("kind"), o["metadata"].get("name")) == key]
            if not targets:
                raise RenderError(f"{kfile}: patch target {key[0]}/{key[1]} not found")
            for index in targets:
                objects[index] = _merge(objects[index], patch)
    for label_set in spec.get("labels") or []:
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise RenderError(f"{kfile}: labels with includeSelectors/includeTemplates are not supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set.get("pairs") or {})
    for image in spec.get("images") or []:
        for obj in objects:
            for container in _containers(obj):
                name, _, _tag = str(container.get("image", "")).partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    tag = image.get("newTag")
                    container["image"] = f"{new}:{tag}" if tag else new
    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return objects


def render_kubectl(directory: Path, kubectl: str) -> list[Obj]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        raise RenderError(f"{directory}: kubectl kustomize failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


# ----------------------------------------------------------------------------------------------- validate


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _custom_schema(name: str) -> Any:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def _own_rules(obj: Obj) -> Iterator[str]:
    if obj.get("kind") != "Deployment":
        return
    pod = obj["spec"]["template"]["spec"]
    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
        yield "pod securityContext.runAsNonRoot is not true"
    for container in pod.get("containers") or []:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                yield f"container {container.get('name')}: no {probe}"
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part) or {}):
                yield f"container {container.get('name')}: resources.{part} needs cpu and memory"


def validate(objects: Iterable[Obj], version: str) -> list[str]:
    """Every problem found in ``objects`` (empty: all valid)."""
    problems: list[str] = []
    for obj in objects:
        where = _name(obj)
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            problems.append(f"{where}: not a Kubernetes object")
            continue
        custom = CUSTOM.get((obj["apiVersion"], obj["kind"]))
        try:
            if custom is not None:
                jsonschema.validate(obj, _custom_schema(custom))
            else:
                kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj['apiVersion']} {obj['kind']}")
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(top)"
            problems.append(f"{where}: {path}: {exc.message}")
        problems.extend(f"{where}: {problem}" for problem in _own_rules(obj))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("overlays", nargs="*", type=Path, help="default: every deploy/k8s/overlays/*")
    parser.add_argument("--renderer", choices=("auto", "kubectl", "python"), default="auto")
    parser.add_argument("--k8s-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    overlays = args.overlays or sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
    kubectl = shutil.which("kubectl") if args.renderer in ("auto", "kubectl") else None
    if args.renderer == "kubectl" and kubectl is None:
        print("deploy-check: kubectl not found", file=sys.stderr)
        return 1
    failed = False
    for overlay in overlays:
        try:
            objects = render_kubectl(overlay, kubectl) if kubectl else render(overlay)
        except (RenderError, OSError, yaml.YAMLError) as exc:
            print(f"FAIL {overlay}: {exc}")
            failed = True
            continue
        problems = validate(objects, args.k8s_version)
        how = "kubectl kustomize" if kubectl else "python renderer"
        if problems:
            failed = True
            print(f"FAIL {overlay} ({how}, {len(objects)} objects):")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {overlay} ({how}): {len(objects)} objects valid (Kubernetes {args.k8s_version})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
