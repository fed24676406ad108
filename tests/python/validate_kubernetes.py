"""Validates Kubernetes manifests with kubernetes-validate (the Kubernetes JSON schemas,
bundled in the package, strict: an unknown field is an error) and hands them on as JSON.

    python validate_kubernetes.py -k 1.30 -k 1.37 FILE...

Prints {"objects": [every object of every file, in order], "errors": ["...", ...]}. An
object whose kind has no schema is an error here (the library's own command line only
warns about it and passes), and so is a file with no object at all.
"""

import argparse
import json
import sys

import yaml
from kubernetes_validate import utils


def name_of(obj: dict) -> str:
    kind = obj.get("kind", "?") if isinstance(obj, dict) else "?"
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
    return f"{kind}/{name}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    objects, errors = [], []
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            documents = [doc for doc in yaml.safe_load_all(f) if doc is not None]
        if not documents:
            errors.append(f"{path}: no object")
        for obj in documents:
            objects.append(obj)
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
                errors.append(f"{path}: {name_of(obj)}: not a Kubernetes object")
                continue
            for version in args.kubernetes_version:
                where = f"{path}: {name_of(obj)} (Kubernetes {version})"
                try:
                    utils.validate(obj, version, strict=True)
                except utils.ValidationError as e:
                    field = ".".join(str(part) for part in e.path) or "(the object)"
                    errors.append(f"{where}: {field}: {e.message}")
                except (utils.SchemaNotFoundError, utils.VersionNotSupportedError) as e:
                    errors.append(f"{where}: {e.message}")

    json.dump({"objects": objects, "errors": errors}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
