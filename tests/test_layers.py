"""The house: mindshuffle's imports point one way, down the layers below, with no circles. Every import counts,
also those inside functions (kept there to stay light at start-up, never to dodge a circle).

A module's room is its package (``models``, ``train``, ``research``, ``cli``) or the module itself; a room imports
only rooms on lower floors (inside a package, modules import each other without a circle). ``research`` is the top
floor, so the test also holds that nothing in the zoo imports it.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "mindshuffle")

FLOORS = [
    ["errors"],                                                              # MindshuffleError and its kinds
    ["fileio", "meta"],                                                      # atomic writes; what a checkpoint means
    ["registry", "schedules", "runfiles", "weights_table", "hub", "recipe", "plots"],
    ["layers", "data", "paramwrite"],                                        # bricks; the data pipeline
    ["models"],                                                              # one file per family
    ["accel"],                                                               # CPU kernels: a rewrite of built models
    ["convert_names", "features", "ema"],
    ["checkpoints"],                                                         # save, read, load weights
    ["converters"],                                                          # PyTorch weights -> ours
    ["pretrained"],                                                          # published weights: table + hub
    ["builder"],                                                             # create_model
    ["evaluate", "export", "average", "report", "modelzoo"],
    ["train"],                                                               # the training engine
    ["cli", "__init__"],                                                     # commands; the package's front door
    ["research"],                   # profiling, G1-G4, speed: stands on the zoo, and no room of the zoo imports it
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def _modules() -> dict:
    out = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _imports(name: str, path: str, modules: dict) -> set:
    """Every mindshuffle module ``name`` imports, anywhere in the file."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def _room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_room_has_a_floor():
    rooms = {_room(m) for m in _graph()}
    assert rooms == set(FLOOR), f"rooms without a floor: {rooms - set(FLOOR)}; floors without a room: " \
                                f"{set(FLOOR) - rooms}"


def test_imports_point_down():
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                    if _room(m) != _room(t) and FLOOR[_room(t)] >= FLOOR[_room(m)])
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_circles():
    graph, state, stack = _graph(), {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_function_is_longer_than_80_lines():
    """Short functions, one concern each: none in the package spans more than 80 lines (docstring included)."""
    long = []
    for name, path in sorted(_modules().items()):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def _calls_and_strings(path: str):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name):
            yield "call", f"{node.func.value.id}.{node.func.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield "str", node.value


def test_one_atomic_writer_and_one_table_helper():
    """Files are published only by fileio's atomic writer (no other mkstemp/rename), and Markdown tables come only
    from fileio.markdown_table (no other '---|' rule lines), in the package and the tools."""
    tools = os.path.join(ROOT, "tools")
    paths = dict(_modules(), **{f"tools.{f[:-3]}": os.path.join(tools, f) for f in os.listdir(tools)
                                if f.endswith(".py")})
    # export moves the file MindSpore wrote (in a private folder) into atomic_path's temporary file
    allowed = {("mindshuffle.export", "os.replace")}
    found = []
    for name, path in sorted(paths.items()):
        if name == "mindshuffle.fileio":
            continue
        for kind, what in _calls_and_strings(path):
            if kind == "call" and what in ("os.replace", "os.rename", "tempfile.mkstemp") and \
                    (name, what) not in allowed:
                found.append(f"{name}: {what}")
            if kind == "str" and "---|" in what:
                found.append(f"{name}: a Markdown rule line {what!r}")
    assert not found, "writers or tables of their own:\n" + "\n".join(found)


def test_markdown_table():
    from mindshuffle.fileio import markdown_table
    assert markdown_table(("model", "img/s"), [("a|b", 1.5), ("c", None)], align="lr").splitlines() == [
        "| model | img/s |", "|---|---:|", "| a\\|b | 1.5 |", "| c | - |"]
    assert markdown_table(("x", "y", "z"), []).splitlines()[1] == "|---|---|---|"
