"""Converts the operators' CustomResourceDefinitions into strict JSON Schemas,
so that the custom resources of deploy/k8s/ are validated offline, field by
field, like the built-in kinds.

The CRDs themselves are data kept outside the project (../shared/crds/: Strimzi,
cass-operator, OT redis-operator, prometheus-operator); each served version's
`openAPIV3Schema` becomes one file named as kubeconform's schema-location
template `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`
expects, and as `schema_for` finds it.

What the conversion changes, and why:
- An object that lists its properties and does not say otherwise gets
  `additionalProperties: false`: the API server prunes unknown fields
  silently, so a misspelt field would otherwise pass here and vanish there.
- `x-kubernetes-preserve-unknown-fields: true` makes the node free-form. The
  trap: cass-operator types `spec.config` as `type: string, format: byte` AND
  preserve-unknown-fields, and every real CassandraDatacenter writes an
  object there (the API server honours the extension over the type). Such a
  node keeps no `type`; with properties, it keeps them but allows more.
- `x-kubernetes-int-or-string` is either a string or an integer.
- `nullable: true` adds "null" to the type.
- `format` is dropped: Kubernetes' formats (int32, int64, byte, quantity)
  are not JSON Schema's, and a validator that asserts formats would reject
  valid objects (a `byte` string that is not base64 is still stored).
- `x-kubernetes-validations` (CEL rules) are not JSON Schema: they are
  evaluated only by an API server, so they are checked only on a cluster.

    .venv/bin/python tools/crd_schemas.py ../shared/crds OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]
# libyaml's loader when PyYAML has it: the CRDs are megabytes of YAML.
Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keywords whose value is one schema, or a list or mapping of schemas.
_ONE = ("items", "not")
_MANY = ("allOf", "anyOf", "oneOf")
_DROPPED = ("format", "x-kubernetes-validations", "x-kubernetes-embedded-resource")


def convert_node(node: Schema) -> Schema:
    """One openAPIV3Schema node as a strict JSON Schema node."""
    out: Schema = {}
    free_form = node.get("x-kubernetes-preserve-unknown-fields") is True
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: convert_node(child) for name, child in value.items()}
        elif key == "additionalProperties":
            out[key] = convert_node(value) if isinstance(value, dict) else value
        elif key in _ONE:
            out[key] = convert_node(value)
        elif key in _MANY:
            out[key] = [convert_node(child) for child in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if free_form:
        # The trap (see the module docstring): the extension wins over the type.
        if "properties" in out:
            out["type"] = "object"
            out.pop("additionalProperties", None)
        else:
            out.pop("type", None)
    elif "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable") is True and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def resource_schema(group: str, kind: str, version: str, openapi: Schema) -> Schema:
    """The whole object's schema: apiVersion and kind fixed, metadata an object."""
    schema = convert_node(openapi)
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}"]}
    properties["kind"] = {"type": "string", "enum": [kind]}
    # The API server validates metadata itself, the same for every kind.
    properties["metadata"] = {"type": "object"}
    schema["type"] = "object"
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def crds(directory: Path) -> Iterator[Schema]:
    for path in sorted(directory.rglob("*.yaml")):
        for document in yaml.load_all(path.read_text(), Loader=Loader):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                yield document


def schema_path(out: Path, group: str, kind: str, version: str) -> Path:
    return out / group / f"{kind.lower()}_{version}.json"


def convert_all(crd_dir: Path, out: Path) -> list[Path]:
    """Writes one schema per served version of every CRD; returns the files."""
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"no CRD directory at {crd_dir}")
    written: list[Path] = []
    for crd in crds(crd_dir):
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            openapi = version.get("schema", {}).get("openAPIV3Schema")
            if openapi is None:
                raise ValueError(f"{kind} {version['name']} has no openAPIV3Schema")
            path = schema_path(out, group, kind, version["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(resource_schema(group, kind, version["name"], openapi), indent=1))
            written.append(path)
    if not written:
        raise ValueError(f"no CustomResourceDefinition in {crd_dir}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("crd_dir", type=Path)
    parser.add_argument("out", type=Path)
    options = parser.parse_args()
    for path in convert_all(options.crd_dir, options.out):
        print(path)


if __name__ == "__main__":
    main()
