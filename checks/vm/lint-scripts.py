"""The VM tests' Python scripts, checked without a Nix machine: each parses,
and every name it reads is a node of its test, a name the NixOS test driver
defines, a builtin, or one the script binds itself.

Reads {test: {"script": ..., "nodes": [...]}} as JSON on stdin (checks/nix.sh
makes it with checks/module-eval.nix --arg vmScripts true)."""

import ast
import builtins
import json
import sys

# What the test driver puts in a script's globals.
DRIVER = {"start_all", "join_all", "subtest", "machines", "driver", "retry", "log",
          "serial_stdout_on", "serial_stdout_off", "polling_condition", "Machine", "test_script"}


def bound(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
            names.update(argument.arg for argument in node.args.args)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def main():
    failed = False
    for test, entry in json.load(sys.stdin).items():
        where = f"checks/vm/{test}.nix (testScript)"
        try:
            tree = ast.parse(entry["script"], filename=where)
        except SyntaxError as error:
            print(f"{where}: {error}")
            failed = True
            continue
        known = bound(tree) | set(entry["nodes"]) | DRIVER | set(dir(builtins))
        unknown = sorted({n.id for n in ast.walk(tree)
                          if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in known})
        if unknown:
            print(f"{where}: names that are neither nodes nor defined: {', '.join(unknown)}")
            failed = True
        else:
            print(f"  {test}: the script parses, and names only its nodes ({', '.join(entry['nodes'])})")
    sys.exit(1 if failed else 0)


main()
