#!/usr/bin/env python3
"""Strict offline validation of rendered Kubernetes manifests.

Every object must validate against the JSON schema of its kind for the pinned Kubernetes
version, in strict mode (unknown or misspelled fields fail). Kinds that kubernetes-validate
has no schema for are failures too, unless this directory ships a schema for them
(schemas/<kind>-<group>-<version>.json, used for cert-manager's Certificate).

usage: validate.py --kubernetes-version 1.33.0 FILE...
Prints one line per file and a closing "validated: N objects, M failed"; exits 1 on failure.
"""
import argparse
import json
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = pathlib.Path(__file__).resolve().parent
LOCAL_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): HERE / "schemas" / "certificate-cert-manager-v1.json",
}


def validate_object(obj, version):
    """Returns an error message, or None when the object is valid."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in LOCAL_SCHEMAS:
        schema = json.loads(LOCAL_SCHEMAS[key].read_text())
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
        if errors:
            e = errors[0]
            return "%s: %s" % (".".join(str(p) for p in e.path), e.message)
        return None
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        return "%s: %s" % (".".join(str(p) for p in e.path), e.message)
    except kv.SchemaNotFoundError as e:
        return e.message
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    total = failed = 0
    for f in args.files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(f).read_text()) if d]
        bad = 0
        for obj in docs:
            total += 1
            err = validate_object(obj, args.kubernetes_version)
            if err:
                bad += 1
                print("  FAIL %s %s/%s: %s" % (f, obj.get("kind"), obj.get("metadata", {}).get("name"), err))
        failed += bad
        print("%-60s %3d objects, %d invalid" % (f, len(docs), bad))
    print("validated: %d objects, %d failed (strict, Kubernetes %s)" % (total, failed, args.kubernetes_version))
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
