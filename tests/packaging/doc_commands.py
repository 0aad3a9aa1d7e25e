"""Extract the commands of the docs' fenced shell blocks and check each one as far as can be done without a
cluster. Used by test_doc_commands.py (`pytest tests/packaging/test_doc_commands.py` lists every problem).

A block is checked when its info string is bash, sh, shell or console (console: only `$ ` lines). Every simple
command (split at |, &&, ||, ;, &, subshells, `$(...)`, `sh -c '...'`) must be one of:

- `make T...`: each target exists in the Makefile;
- `kubectl omendb ...` / `kubectl-omendb ...`, `backup_tool ...`, `omendb ...`: accepted by the real CLI's own
  argparse parser;
- `kubectl ...`: the real kubectl accepts the verb and every flag (`kubectl ARGS --help` parses all flags and
  contacts no server), every resource type named exists in the API server's discovery (core kinds and this
  project's CRDs: names, singular names, short names, kinds, categories), and `-f PATH` exists in the repo;
- `helm install|upgrade|template|lint ...`: flags accepted (`--help` as above), the chart path exists, and for
  install/upgrade/template `helm template` with the same values really renders (the values schema checks
  every `--set` key);
- `python -m MODULE`: MODULE importable; `python path.py`, `pytest PATH...`: the paths exist;
- a command in ALLOWED (generic tools whose use cannot be checked here; each group says why).

Anything else is an error naming the file, the line and what is wrong. `$VAR` set earlier in the same block is
expanded; other variables, `$(...)` results and `<placeholders>` are unknown values: parsers see `0`, and paths
holding them are not checked.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}

# Commands accepted without a check, because what they do depends on the user's machine or data, not on this
# repository. Keep it short: a project command belongs in a checker above, never here.
ALLOWED = {
    # shell builtins and control words
    "cd", "export", "echo", "eval", "set", "unset", "source", ".", "read", "printf", "test", "[", "true",
    "false", "sleep", "wait", "kill", "exit", "return", "trap", "if", "then", "else", "elif", "fi", "for",
    "while", "until", "do", "done", "case", "esac", "in", "function", "{", "}", "!",
    # text and file tools the docs pipe output through
    "cat", "grep", "egrep", "awk", "sed", "sort", "uniq", "head", "tail", "cut", "tr", "wc", "xargs", "tee",
    "ls", "mkdir", "rm", "cp", "mv", "chmod", "chown", "touch", "date", "base64", "jq", "diff", "find", "less",
    "watch", "du", "df", "stat", "sha256sum", "tar", "zstd", "gzip",
    # HTTP clients and load generators against the user's own endpoints
    "curl", "wrk",
    # certificate and password tools (the guide's TLS and htpasswd steps)
    "openssl", "htpasswd",
    # system inspection and tuning on the user's hosts
    "free", "top", "pgrep", "ps", "sysctl", "useradd", "apt-get", "nproc", "uname", "id", "whoami",
    # package and source tools
    "pip", "pip3", "git", "go",
}
# Prefixes that run the command after them, with how many positional words of their own they take.
WRAPPERS = {"sudo": 0, "time": 0, "nohup": 0, "exec": 0, "command": 0, "env": 0, "nice": 0, "timeout": 1,
            "flock": 1}
WRAPPER_VALUE_OPTIONS = {"sudo": {"-u", "-g"}, "nice": {"-n"}, "timeout": {"-s", "-k"}, "flock": {"-w", "-E"}}
PYTHONS = {"python", "python3", "python3.11"}
UNKNOWN = "0"  # what a parser sees for a value the docs leave to the reader ($VAR, $(...), <placeholder>)
VAR = re.compile(r"\$\{?(\w+)\}?")
PLACEHOLDER = re.compile(r"<([A-Za-z][\w.-]*)>")


def is_known(raw_word: str) -> bool:
    """Whether a word is fully known (no variable, substitution or placeholder left in it)."""
    return not re.search(r"\$|\x00|\x01", raw_word)


@dataclass
class Command:
    file: Path
    line: int
    argv: list[str]  # values filled in: known variables expanded, unknown ones as UNKNOWN
    raw: list[str]  # as written (after quote removal)
    text: str

    def known(self, i: int) -> bool:
        return is_known(self.raw[i])

    def where(self) -> str:
        try:
            rel = self.file.relative_to(ROOT)
        except ValueError:
            rel = self.file
        return f"{rel}:{self.line}"


@dataclass
class Problem:
    command: Command
    message: str

    def __str__(self) -> str:
        return f"{self.command.where()}: `{self.command.text}`: {self.message}"


# ---- extraction


def shell_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line of the block's first line, lines) of each fenced shell block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        start, body = i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            if lang == "console":
                body = [ln[2:] if ln.startswith("$ ") else "" for ln in body]
            yield start, body


def logical_lines(start: int, body: list[str]) -> Iterator[tuple[int, str]]:
    """Join backslash continuations, drop heredoc bodies and comments."""
    i = 0
    while i < len(body):
        lineno, line = start + i, body[i]
        while line.rstrip().endswith("\\") and i + 1 < len(body):
            i += 1
            line = line.rstrip()[:-1] + " " + body[i].strip()
        i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc:
            while i < len(body) and body[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        line = strip_comment(line)
        if line.strip():
            yield lineno, line


def strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t;|&("):
            return line[:i]
    return line


def substitutions(line: str) -> tuple[str, list[str]]:
    """Replace each `$(...)` and backtick substitution by a marker; return the line and their contents."""
    inner: list[str] = []
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i) and not line.startswith("$((", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            inner.append(line[i + 2:j - 1])
            out.append("\x00")
            i = j
        elif line[i] == "`":
            j = line.find("`", i + 1)
            j = len(line) if j < 0 else j
            inner.append(line[i + 1:j])
            out.append("\x00")
            i = j + 1
        else:
            out.append(line[i])
            i += 1
    return "".join(out), inner


SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", "<<", "<<<", ">|", "&>>"}


def simple_commands(line: str) -> Iterator[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError as exc:  # unbalanced quotes
        raise SyntaxError(str(exc)) from None
    current: list[str] = []
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok in SEPARATORS:
            if current:
                yield current
            current = []
        elif tok in REDIRECTS or (tok and set(tok) <= set("<>&|") and tok not in SEPARATORS):
            if current and current[-1].isdigit():
                current.pop()  # the fd number of `2>`
            skip_next = True
        else:
            current.append(tok)
    if current:
        yield current


def commands(path: Path) -> Iterator[Command | Problem]:
    for start, body in shell_blocks(path.read_text()):
        env: dict[str, str] = {}
        for lineno, line in logical_lines(start, body):
            yield from _line_commands(path, lineno, line, env)


def _line_commands(path: Path, lineno: int, line: str, env: dict[str, str]) -> Iterator[Command | Problem]:
    line = PLACEHOLDER.sub(lambda m: "\x01" + m.group(1), line)
    line, inner = substitutions(line)
    for sub in inner:
        yield from _line_commands(path, lineno, sub, env)
    try:
        split = list(simple_commands(line))
    except SyntaxError as exc:
        yield Problem(Command(path, lineno, [], [], line.strip()), f"cannot parse the line: {exc}")
        return
    for words in split:
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):  # NAME=value prefix or statement
            name, value = words.pop(0).split("=", 1)
            env[name] = value if not re.search(r"\$|\x00|\x01", value) else "$" + name
        if not words:
            continue
        raw = [_expand(w, env) for w in words]
        argv = [VAR.sub(UNKNOWN, w).replace("\x00", UNKNOWN) for w in raw]
        argv = [re.sub(r"\x01[\w.-]*", UNKNOWN, w) for w in argv]
        text = " ".join(shlex.quote(w.replace("\x00", "$(...)").replace("\x01", "<")) for w in words)
        yield Command(path, lineno, argv, raw, text)


def _expand(word: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        value = env.get(m.group(1))
        return value if value is not None and not value.startswith("$") else m.group(0)
    return VAR.sub(sub, word)


# ---- checks


@dataclass
class Context:
    """What the checks compare against: the real kubectl/helm binaries and the API server's discovery."""
    kubectl: Path
    helm: Path
    resource_names: set[str]


def strip_wrappers(argv: list[str], raw: list[str]) -> tuple[list[str], list[str]]:
    """`sudo -E nice -n 19 flock LOCK make test` -> `make test`."""
    while argv and Path(argv[0]).name in WRAPPERS:
        prog = Path(argv[0]).name
        positional = WRAPPERS[prog]
        argv, raw = argv[1:], raw[1:]
        while argv:
            word = argv[0]
            if word.startswith("-"):
                drop = 2 if word in WRAPPER_VALUE_OPTIONS.get(prog, ()) else 1
            elif prog == "env" and re.fullmatch(r"[A-Za-z_]\w*=.*", word):
                drop = 1
            elif positional > 0:
                positional, drop = positional - 1, 1
            else:
                break
            argv, raw = argv[drop:], raw[drop:]
    return argv, raw


def check(cmd: Command, ctx: Context) -> list[str]:
    """Problems of one command (messages only)."""
    argv, raw = strip_wrappers(list(cmd.argv), list(cmd.raw))
    if not argv:
        return []
    prog = Path(argv[0]).name
    if prog in ("sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
        out = []
        for item in _line_commands(cmd.file, cmd.line, raw[2], {}):
            out += [item.message] if isinstance(item, Problem) else check(item, ctx)
        return out
    inner = Command(cmd.file, cmd.line, argv, raw, cmd.text)
    checker = CHECKERS.get(prog)
    if checker is not None:
        return checker(inner, ctx)
    if prog in ALLOWED:
        return []
    if "/" in argv[0] and inner.known(0):
        return [] if (ROOT / argv[0]).exists() else [f"{argv[0]} does not exist in the repository"]
    return [f"unknown command {prog!r}: add a checker in tests/packaging/doc_commands.py, or add it to ALLOWED "
            "there with a comment saying why it cannot be checked"]


def check_make(cmd: Command, ctx: Context) -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    targets = [a for a in cmd.argv[1:] if not a.startswith("-") and "=" not in a]
    if not targets:
        return []
    return [f"no target {t!r} in the Makefile" for t in targets
            if not re.search(rf"^{re.escape(t)}\s*:(?!=)", makefile, re.M)]


def _parse_with(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return [f"{parser.prog} refuses it: {err.getvalue().strip().splitlines()[-1]}"]
    return []


def check_plugin(cmd: Command, ctx: Context) -> list[str]:
    from omendb_operator.plugin.cli import parser

    args = cmd.argv[2:] if Path(cmd.argv[0]).name == "kubectl" else cmd.argv[1:]
    return _parse_with(parser(), args)


def check_backup_tool(cmd: Command, ctx: Context) -> list[str]:
    from omendb.backup.cli import parser

    return _parse_with(parser(), cmd.argv[1:])


def check_omendb(cmd: Command, ctx: Context) -> list[str]:
    from omendb.cli import parser

    return _parse_with(parser(), cmd.argv[1:])


def check_omendb_operator(cmd: Command, ctx: Context) -> list[str]:
    return [] if len(cmd.argv) == 1 else ["omendb-operator takes no arguments (its settings are environment "
                                          "variables, see docs/operator.md)"]


def _tool_env() -> dict[str, str]:
    """kubectl and helm run offline: no kubeconfig, no user configuration or plugins, nothing written home."""
    scratch = "/tmp/doc-commands-helm"
    return {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "KUBECONFIG": "/dev/null",
            "HELM_CONFIG_HOME": scratch, "HELM_CACHE_HOME": scratch, "HELM_DATA_HOME": scratch}


@functools.cache
def _help_ok(binary: str, args: tuple[str, ...]) -> str:
    """'' when BINARY accepts ARGS (cobra parses every flag before it honours --help), else its error."""
    argv = list(args)
    if "--" in argv:
        argv = argv[:argv.index("--")]
    out = subprocess.run([binary, *argv, "--help"], capture_output=True, text=True, timeout=60, env=_tool_env())
    if out.returncode == 0:
        return ""
    return (out.stderr.strip() or out.stdout.strip()).splitlines()[0] if (out.stderr or out.stdout) else \
        f"exit {out.returncode}"


# Flags of kubectl that take a value as the next word (needed to find positional arguments).
KUBECTL_VALUE_FLAGS = {
    "-n", "--namespace", "-l", "--selector", "-o", "--output", "-f", "--filename", "-p", "--patch", "--type",
    "--for", "--timeout", "--replicas", "--context", "--kubeconfig", "-c", "--container", "--since", "--tail",
    "--field-manager", "--image", "--port", "--env", "--from", "--cert", "--key", "--from-file", "--from-literal",
    "--sort-by", "--field-selector", "--template", "-L", "--label-columns", "--overrides", "--restart",
    "--address", "--server", "--user", "--cluster", "--as", "--since-time", "--grace-period", "--dry-run",
    "--current-replicas", "--resource-version", "--subresource", "--request-timeout", "-k", "--kustomize",
    "--from-env-file", "--cascade", "--raw", "--show-labels-columns", "--max-log-requests", "--limit-bytes",
    "--serviceaccount", "--docker-server", "--docker-username", "--docker-password", "--docker-email",
}
KUBECTL_BOOL_IN = {"logs": {"-f", "--follow", "-p", "--previous"}}
RESOURCE_VERBS = {"get", "describe", "delete", "edit", "label", "annotate", "patch", "scale", "wait", "explain",
                  "autoscale", "expose"}
POD_OR_RESOURCE_VERBS = {"logs", "exec", "port-forward", "attach", "cp"}


def kubectl_positionals(args: list[str]) -> tuple[list[int], list[str]]:
    """Indices of positional words after the verb, and every -f/--filename value (of ``args``: pass the raw
    words to see what the docs wrote)."""
    verb = args[0] if args else ""
    value_flags = KUBECTL_VALUE_FLAGS - KUBECTL_BOOL_IN.get(verb, set())
    pos, files, i = [], [], 1
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a.startswith("-"):
            name = a.split("=", 1)[0]
            if name in ("-f", "--filename"):
                if "=" in a:
                    files.append(a.split("=", 1)[1])
                elif verb not in KUBECTL_BOOL_IN and i + 1 < len(args):
                    files.append(args[i + 1])
            if "=" not in a and name in value_flags:
                i += 1
        else:
            pos.append(i)
        i += 1
    return pos, files


def check_kubectl(cmd: Command, ctx: Context) -> list[str]:
    if len(cmd.argv) > 1 and cmd.argv[1] == "omendb":
        return check_plugin(cmd, ctx)
    args, raw = cmd.argv[1:], cmd.raw[1:]
    # Global flags before the verb.
    while args and args[0].startswith("-"):
        take = 2 if args[0] in KUBECTL_VALUE_FLAGS else 1
        args, raw = args[take:], raw[take:]
    problems = []
    error = _help_ok(str(ctx.kubectl), tuple(cmd.argv[1:]))
    if error:
        problems.append(f"kubectl refuses it: {error}")
        return problems
    if not args:
        return problems
    verb = args[0]
    pos, _ = kubectl_positionals(args)
    _, files = kubectl_positionals(raw)
    kinds: list[tuple[str, bool]] = []
    if verb in RESOURCE_VERBS and pos:
        first = pos[0]
        known = is_known(raw[first])
        spec = args[first].split(".")[0] if verb == "explain" else args[first]
        kinds = [(k.split("/")[0], known) for k in spec.split(",")]
    elif verb in ("rollout", "set", "top") and len(pos) >= 2:
        word = args[pos[1]]
        if verb != "top":
            kinds = [(word.split("/")[0], is_known(raw[pos[1]]))]
        elif word not in ("pod", "pods", "po", "node", "nodes", "no"):
            problems.append(f"kubectl top takes pod or node, not {word!r}")
    elif verb in POD_OR_RESOURCE_VERBS and pos and "/" in args[pos[0]]:
        kinds = [(args[pos[0]].split("/")[0], is_known(raw[pos[0]]))]
    elif verb == "create" and pos:
        sub = args[pos[0]]
        if sub == "job" and any(a.startswith("--from=") for a in args):
            kinds = [(next(a for a in args if a.startswith("--from=")).split("=", 1)[1].split("/")[0], True)]
    for kind, known in kinds:
        if known and kind.lower() not in ctx.resource_names:
            problems.append(f"no resource type {kind!r} in the API server (not a core kind nor one of this "
                            "project's CRDs' names, short names or categories)")
    for f in files:
        if f == "-" or "://" in f or not is_known(f):
            continue
        if "/" in f and not (ROOT / f).exists():
            problems.append(f"-f {f}: no such file or directory in the repository")
    if verb == "exec" and "--" in args:
        # The command run in the pod is one of ours (backup_tool, omendb, ...): check it like any other.
        at = args.index("--") + 1
        problems += check(Command(cmd.file, cmd.line, args[at:], raw[at:], cmd.text), ctx)
    return problems


HELM_VALUE_FLAGS = {"-n", "--namespace", "--set", "--set-string", "--set-file", "--set-json", "-f", "--values",
                    "--version", "--timeout", "--kubeconfig", "--kube-context", "--description", "--repo",
                    "--post-renderer", "--name-template", "--output", "-o", "--max-history"}


def check_helm(cmd: Command, ctx: Context) -> list[str]:
    args = cmd.argv[1:]
    error = _help_ok(str(ctx.helm), tuple(args))
    if error:
        return [f"helm refuses it: {error}"]
    if not args or args[0] not in ("install", "upgrade", "template", "lint"):
        return []
    pos, i = [], 1
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            if "=" not in a and a in HELM_VALUE_FLAGS:
                i += 1
        else:
            pos.append(i)
        i += 1
    chart_index = pos[0] if args[0] == "lint" else (pos[1] if len(pos) > 1 else None)
    if chart_index is None:
        return ["helm needs a release name and a chart"] if args[0] != "lint" else []
    chart = args[chart_index]
    # This project publishes no Helm repository: a chart given as a path must be the repository's.
    if not cmd.known(chart_index + 1) or "/" not in chart or chart.startswith("oci://"):
        return []
    if not (ROOT / chart).is_dir():
        return [f"chart {chart} does not exist in the repository"]
    if args[0] == "lint":
        return []
    drop = {"--create-namespace", "--wait", "--atomic", "--install", "-i", "--reuse-values", "--reset-values",
            "--cleanup-on-fail", "--force", "--wait-for-jobs"}
    template = ["template"]
    j = 1
    while j < len(args):
        a = args[j]
        if a.split("=", 1)[0] in drop:
            j += 1
            continue
        if a.split("=", 1)[0] == "--timeout":
            j += 1 if "=" in a else 2
            continue
        template.append(str(ROOT / a) if j == chart_index else a)
        j += 1
    if args[0] != "template" and "--kube-version" not in template:
        # install/upgrade render for the cluster's version; offline, say which (the chart's kubeVersion
        # refuses helm's own default, v1.20). A documented `helm template` must name one itself.
        template += ["--kube-version", "1.33.0"]
    out = subprocess.run([str(ctx.helm), *template], capture_output=True, text=True, timeout=120, env=_tool_env())
    if out.returncode != 0:
        return [f"`helm {' '.join(template)}` fails: {out.stderr.strip()}"]
    return []


def check_python(cmd: Command, ctx: Context) -> list[str]:
    args = cmd.argv[1:]
    if not args or args[0] == "-c":
        return []
    if args[0] == "-m":
        if len(args) < 2:
            return ["python -m needs a module"]
        module = args[1]
        if module == "pytest":
            return check_pytest(Command(cmd.file, cmd.line, ["pytest", *args[2:]], ["pytest", *cmd.raw[3:]],
                                        cmd.text), ctx)
        for path in (str(ROOT), str(ROOT / "engine"), str(ROOT / "operator")):
            if path not in sys.path:
                sys.path.insert(0, path)
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        return [] if found else [f"module {module} cannot be imported"]
    if args[0].endswith(".py") and cmd.known(1):
        return [] if (ROOT / args[0]).is_file() else [f"{args[0]} does not exist in the repository"]
    return []


def check_pytest(cmd: Command, ctx: Context) -> list[str]:
    problems = []
    for i, a in enumerate(cmd.argv[1:], start=1):
        if a.startswith("-") or not cmd.known(i) or "/" not in a and not a.endswith(".py"):
            continue
        if not (ROOT / a.split("::")[0]).exists():
            problems.append(f"pytest path {a} does not exist in the repository")
    return problems


CHECKERS: dict[str, Callable[[Command, Context], list[str]]] = {
    "make": check_make, "kubectl": check_kubectl, "kubectl-omendb": check_plugin, "backup_tool": check_backup_tool,
    "omendb": check_omendb, "omendb-operator": check_omendb_operator, "helm": check_helm, "pytest": check_pytest,
    **{p: check_python for p in PYTHONS},
}


def manifests(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, object) of every Kubernetes object (a mapping with apiVersion and kind) in a yaml block.
    Fragments (a spec excerpt, Helm values, alert rules) have no apiVersion/kind and are not objects."""
    import yaml

    text = path.read_text()
    for m in re.finditer(r"^(\s*)(`{3,})ya?ml[ \t]*\n(.*?)^\s*\2", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 2
        try:
            docs = list(yaml.safe_load_all(m.group(3)))
        except yaml.YAMLError as exc:
            yield line, {"__error__": f"not valid YAML: {exc}"}
            continue
        for doc in docs:
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                yield line, doc


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def heading_anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if re.match(r"^\s*(`{3,}|~{3,})", line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)):
            base = slug(m.group(1))
            anchor, n = base, 0
            while anchor in anchors:  # GitHub numbers repeated headings
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


def relative_links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every Markdown link that is not a URL, outside fenced blocks and inline code."""
    in_fence = False
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if re.match(r"^\s*(`{3,}|~{3,})", line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            target = m.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                yield lineno, target


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def problems_in(paths: list[Path], ctx: Context) -> tuple[int, list[Problem]]:
    count, out = 0, []
    for path in paths:
        for item in commands(path):
            if isinstance(item, Problem):
                out.append(item)
                continue
            count += 1
            out += [Problem(item, message) for message in check(item, ctx)]
    return count, out


def discovery_names(get: Callable[[str], dict]) -> set[str]:
    """Every way kubectl can name a resource type, from the API server's discovery documents."""
    names = {"all"}
    group_versions = ["/api/v1"]
    for group in get("/apis")["groups"]:
        group_versions += [f"/apis/{v['groupVersion']}" for v in group["versions"]]
    for gv in group_versions:
        doc = get(gv)
        group = doc.get("groupVersion", "v1").split("/")[0] if "/" in doc.get("groupVersion", "") else ""
        for r in doc.get("resources", []):
            if "/" in r["name"]:
                continue
            for n in [r["name"], r.get("singularName", ""), r.get("kind", "").lower(), *r.get("shortNames", []),
                      *r.get("categories", [])]:
                if n:
                    names.add(n.lower())
                    if group:
                        names.add(f"{n.lower()}.{group}")
    return names

