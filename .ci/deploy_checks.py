#!/usr/bin/env python3
"""Helpers of .ci/deploy-checks.sh (the deploy/ checks that need more than a shell line). Standard library plus
PyYAML (a dependency of kubernetes-validate and check-jsonschema, installed by the script beside them).

  prometheusrule [--write]   deploy/prometheus/prometheusrule.yaml is runway-alerts.yml's groups wrapped in a
                             PrometheusRule; --write regenerates it, otherwise fail when it differs.
  render DIR                 print the kustomization in DIR rendered, with the fallback renderer below.
  same-render DIR FILE       fail unless FILE (`kubectl kustomize DIR` output) holds the same objects as the
                             fallback renderer makes of DIR: keeps the fallback faithful while kubectl exists.
  split OUTDIR FILE...       write each document of FILE... to OUTDIR/<kind>/<n>.json, for check-jsonschema.
  crd-schemas OUTDIR         (run with the venv holding the cloudcoil models) write OUTDIR/<Kind>.json, the
                             JSON Schema of each custom resource kind deploy/ uses, strict (see below).
"""

import json
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy", "prometheus", "runway-alerts.yml")
PROMETHEUSRULE = os.path.join(ROOT, "deploy", "prometheus", "prometheusrule.yaml")

PROMETHEUSRULE_HEAD = """\
# GENERATED from runway-alerts.yml by `python3 .ci/deploy_checks.py prometheusrule --write`: edit the rules
# there, then regenerate (CI and tests/it/deploy_files.rs fail while the two differ).
#
# The alert rules of runway-alerts.yml for the Prometheus Operator. Independent of the scrape job's name, so
# they work with the PodMonitor beside this file as with an annotation-driven kubernetes-pods job.
#
#   kubectl apply -n runway -k deploy/prometheus
#
# Your Prometheus's ruleSelector must match this object's labels: kube-prometheus-stack's default selects
# `release: <its Helm release name>`: add that pair to the `labels` of kustomization.yaml beside this file
# (or set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false). Its ruleNamespaceSelector must
# include this namespace.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: runway
  labels:
    app.kubernetes.io/name: runway
spec:
"""


def fail(message):
    print(f"deploy_checks: {message}", file=sys.stderr)
    sys.exit(1)


def prometheusrule(write):
    text = open(RULES, encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        fail(f"{RULES}: no top-level `groups:`")
    # The groups, comments included, two spaces deeper under `spec:`.
    body = "".join(("  " + line) if line.strip() else line for line in lines[start:])
    wanted = PROMETHEUSRULE_HEAD + body
    if write:
        open(PROMETHEUSRULE, "w", encoding="utf-8").write(wanted)
        return
    current = open(PROMETHEUSRULE, encoding="utf-8").read() if os.path.exists(PROMETHEUSRULE) else ""
    if current != wanted:
        fail(
            "deploy/prometheus/prometheusrule.yaml is not runway-alerts.yml's groups: "
            "run `python3 .ci/deploy_checks.py prometheusrule --write`"
        )
    parsed = yaml.safe_load(current)
    if parsed["spec"]["groups"] != yaml.safe_load(text)["groups"]:
        fail("prometheusrule.yaml: spec.groups differs from runway-alerts.yml's groups")
    print("prometheusrule.yaml: same groups as runway-alerts.yml")


# ---------------------------------------------------------------------------------------------------------
# The fallback renderer. `kubectl kustomize` (kustomize v5 inside kubectl) is what renders in CI; it comes
# with the machine image (the google-cloud-cli kubectl), and no registry this project can reach ships
# kustomize or kubectl for Linux (Debian's kubernetes-client is 1.20, without `labels:`). Where it is missing,
# this renders our kustomizations: it supports exactly the features they use and FAILS on any other field, so
# a kustomization that grows a feature it does not know cannot pass unchecked. `same-render` compares it with
# kubectl's output whenever both exist.
#
# Supported: apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization, metadata (ignored, as kustomize
# does), `resources` (files in the same directory), `labels` entries with `pairs` only (kustomize then adds
# the labels to metadata.labels alone: not to selectors, not to pod templates).
# ---------------------------------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "metadata", "resources", "labels"}


def render(directory):
    path = os.path.join(directory, "kustomization.yaml")
    k = yaml.safe_load(open(path, encoding="utf-8"))
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        fail(f"{path}: the fallback renderer does not support {sorted(unknown)}")
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        fail(f"{path}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    pairs = {}
    for entry in k.get("labels") or []:
        if set(entry) - {"pairs"}:
            fail(f"{path}: labels entry with {sorted(set(entry) - {'pairs'})}: not supported by the fallback renderer")
        pairs.update(entry["pairs"])
    docs = []
    for resource in k.get("resources") or []:
        file = os.path.join(directory, resource)
        if "/" in resource or not os.path.isfile(file):
            fail(f"{path}: resource {resource}: only files of the same directory are supported")
        for doc in yaml.safe_load_all(open(file, encoding="utf-8")):
            if doc is None:
                continue
            if pairs:
                doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            docs.append(doc)
    return docs


def key(doc):
    return (doc.get("apiVersion"), doc.get("kind"), doc.get("metadata", {}).get("name"))


def same_render(directory, rendered_file):
    ours = {key(d): d for d in render(directory)}
    theirs = {key(d): d for d in yaml.safe_load_all(open(rendered_file, encoding="utf-8")) if d is not None}
    if ours.keys() != theirs.keys():
        fail(f"{directory}: objects differ from kubectl kustomize: {sorted(ours.keys() ^ theirs.keys(), key=str)}")
    for k, doc in ours.items():
        if doc != theirs[k]:
            fail(f"{directory}: {k} renders differently from kubectl kustomize")
    print(f"{os.path.relpath(directory, ROOT)}: the fallback renderer agrees with kubectl kustomize ({len(ours)} objects)")


def split(outdir, files):
    count = 0
    for file in files:
        for doc in yaml.safe_load_all(open(file, encoding="utf-8")):
            if doc is None:
                continue
            kind_dir = os.path.join(outdir, doc["kind"])
            os.makedirs(kind_dir, exist_ok=True)
            name = f"{doc['metadata']['name']}-{count}.json"
            json.dump(doc, open(os.path.join(kind_dir, name), "w", encoding="utf-8"), indent=1)
            count += 1


# ---------------------------------------------------------------------------------------------------------
# Custom resources. kubernetes-validate knows only the built-in kinds. The cloudcoil model packages on PyPI
# (cloudcoil-models-prometheus-operator, cloudcoil-models-cert-manager) are generated from the projects' CRD
# openAPIV3Schemas; their pydantic models give back that schema as JSON Schema. The API server prunes or,
# with `kubectl apply`'s default strict field validation, refuses fields the CRD does not declare, so every
# object schema is made strict (additionalProperties: false) before check-jsonschema uses it.
# ---------------------------------------------------------------------------------------------------------


def case_insensitive(pattern):
    """`^(?i)abc` (Go's RE2 syntax, in the CRDs) as a pattern ECMA-262 and Python accept: `^[aA][bB][cC]`.
    Letters inside a [class] are left as they are (stricter than the CRD, never looser)."""
    out, in_class, escaped = [], False, False
    for c in pattern.replace("(?i)", ""):
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            out.append(c)
            escaped = True
        elif c == "[":
            in_class = True
            out.append(c)
        elif c == "]":
            in_class = False
            out.append(c)
        elif c.isalpha() and not in_class:
            out.append(f"[{c.lower()}{c.upper()}]")
        else:
            out.append(c)
    return "".join(out)


def strict(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if isinstance(schema.get("pattern"), str) and "(?i)" in schema["pattern"]:
            schema["pattern"] = case_insensitive(schema["pattern"])
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def crd_schemas(outdir):
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    os.makedirs(outdir, exist_ok=True)
    for model in (monitoring.PodMonitor, monitoring.ServiceMonitor, monitoring.PrometheusRule, cert_manager.Certificate):
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        # apiVersion and kind are required of every object; the models default them.
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        json.dump(schema, open(os.path.join(outdir, f"{model.__name__}.json"), "w", encoding="utf-8"))


def main(argv):
    if argv[:1] == ["prometheusrule"]:
        prometheusrule(write=argv[1:] == ["--write"])
    elif argv[:1] == ["render"] and len(argv) == 2:
        yaml.safe_dump_all(render(argv[1]), sys.stdout, sort_keys=False)
    elif argv[:1] == ["same-render"] and len(argv) == 3:
        same_render(argv[1], argv[2])
    elif argv[:1] == ["split"] and len(argv) >= 3:
        split(argv[1], argv[2:])
    elif argv[:1] == ["crd-schemas"] and len(argv) == 2:
        crd_schemas(argv[1])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
