"""Print the README's configuration table, generated from schemas/config.schema.yaml: one row
per key, its default where the schema gives one, and the schema's description of it.

    python scripts/config_table.py      # tests/test_schema.py checks the README holds exactly this
"""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def rows(schema: dict) -> list[tuple[str, str, str]]:
    defs = schema["definitions"]

    def walk(prefix: str, node: dict, out: list):
        if "$ref" in node:
            ref = defs[node["$ref"].split("/")[-1]]
            if "properties" not in ref:  # a plain type: keep the key's own fields
                node = {**ref, **{k: v for k, v in node.items() if k != "$ref"}}
            else:
                if node.get("description"):
                    out.append((prefix, "", node["description"]))
                node = ref
        if "properties" in node:
            if node.get("description") and prefix and "$ref" not in node:
                out.append((prefix, "", node["description"]))
            for key, sub in node["properties"].items():
                walk(f"{prefix}.{key}" if prefix else key, sub, out)
            return
        default = f"`{json_word(node['default'])}`" if "default" in node else ""
        out.append((prefix, default, node.get("description", "")))

    out: list = []
    walk("", schema, out)
    return out


def json_word(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def table(schema: dict) -> str:
    lines = ["| key | default | what |", "| --- | --- | --- |"]
    for key, default, desc in rows(schema):
        lines.append(f"| `{key}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())), end="")
