#!/usr/bin/env python3
"""Turns Gloo's generated CRDs into the emulator's vendored schema file.

Usage: extract-gloo-schemas.py [--no-descriptions] CRD.yaml... > gloo-<version>-crd-schemas.json

Each argument is one of Gloo's CRD manifests (`install/helm/gloo/crds/*.yaml` in
solo-io/gloo). The output is a JSON object with one entry per kind,
`{"Kind": {"served": [versions], "schema": <openAPIV3Schema>}}`, the shape of the
Flagger and Istio files next to this script. Both CRD forms are read: the
`apiextensions.k8s.io/v1` one (`spec.versions[].schema.openAPIV3Schema`) and the older
`v1beta1` one (`spec.validation.openAPIV3Schema`, the same schema for every version).
The script stops if the served versions of a kind have different schemas, as the emulator
keeps one per kind. Needs PyYAML.
"""

import json
import sys

import yaml


def drop_descriptions(node):
    if isinstance(node, dict):
        node.pop("description", None)
        for value in node.values():
            drop_descriptions(value)
    elif isinstance(node, list):
        for value in node:
            drop_descriptions(value)


def kind_schema(crd, path):
    spec = crd.get("spec") or {}
    kind = (spec.get("names") or {}).get("kind")
    if not kind:
        sys.exit(f"{path}: no spec.names.kind")
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    if not versions and spec.get("version"):
        versions = [{"name": spec["version"]}]
    shared = (spec.get("validation") or {}).get("openAPIV3Schema")
    schemas = []
    for v in versions:
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or shared
        if schema is None:
            sys.exit(f"{path}: {kind} {v.get('name')} has no openAPIV3Schema")
        schemas.append(schema)
    if not schemas:
        sys.exit(f"{path}: {kind} serves no version")
    if any(s != schemas[0] for s in schemas[1:]):
        sys.exit(f"{path}: the served versions of {kind} have different schemas")
    return kind, [v["name"] for v in versions], schemas[0]


def main(args):
    keep_descriptions = "--no-descriptions" not in args
    paths = [a for a in args if a != "--no-descriptions"]
    if not paths:
        sys.exit(__doc__)
    out = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                kind, served, schema = kind_schema(crd, path)
                if not keep_descriptions:
                    drop_descriptions(schema)
                out[kind] = {"served": served, "schema": schema}
                print(f"{path}: {kind} ({crd.get('apiVersion')}), served {served}", file=sys.stderr)
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
