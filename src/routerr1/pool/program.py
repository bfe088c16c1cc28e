"""The result of the short arithmetic program a pool model writes for a maths word problem (the
``program`` pool prompt), computed without executing the model's text.

The reply is parsed with :mod:`ast` and interpreted node by node. Only numbers, variables,
arithmetic (``+ - * / // % **``), a few functions (``round abs min max int float sum`` and
``math.floor/ceil/sqrt``) and ``print`` are understood; anything else (strings, attributes,
loops, definitions, other imports) makes the program fail, and its answer is empty. Limits on
statements, magnitudes and exponents keep a runaway reply cheap. So a coder model can answer a
word problem in a few dozen tokens of code where step-by-step prose takes a few hundred.
"""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_STATEMENTS = 64
MAX_MAGNITUDE = 1e15
MAX_EXPONENT = 64
# The variable the prompt asks for; without it, the last print, else the last assignment.
RESULT_NAME = "answer"

_CODE_BLOCK = re.compile(
    r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE
)
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {
    "round": round,
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "sum": sum,
}
_MATH = {"floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt}


class ProgramError(ValueError):
    """The reply is not a program this interpreter runs (the message says which part)."""


def program_text(reply: str) -> str:
    """The code of a reply: its first fenced block (an unclosed one runs to the end, as when
    the token limit cuts it), else the whole reply."""
    match = _CODE_BLOCK.search(reply)
    return match.group(1) if match else reply


def _number(value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProgramError(f"not a number: {value!r}")
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ProgramError(f"number out of range: {value!r}")
    return value


class _Interpreter:
    def __init__(self) -> None:
        self.names: dict[str, object] = {}
        self.printed: object = None
        self.assigned: object = None

    def run(self, tree: ast.Module) -> None:
        if len(tree.body) > MAX_STATEMENTS:
            raise ProgramError(f"more than {MAX_STATEMENTS} statements")
        for statement in tree.body:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            value = self.value(node.value)
            for target in node.targets:
                self.bind(target, value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            current = self.lookup(node.target.id)
            self.bind(node.target, self.binary(node.op, current, self.value(node.value)))
        elif isinstance(node, ast.Expr):
            if (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "print"
            ):
                args = [self.value(a) for a in node.value.args]
                if args:
                    self.printed = args[-1]
            else:
                self.value(node.value)
        elif isinstance(node, ast.Import) and [a.name for a in node.names] == ["math"]:
            self.names[node.names[0].asname or "math"] = _MATH
        elif isinstance(node, ast.ImportFrom) and node.module == "math":
            for alias in node.names:
                if alias.name not in _MATH:
                    raise ProgramError(f"math.{alias.name} is not supported")
                self.names[alias.asname or alias.name] = _MATH[alias.name]
        else:
            raise ProgramError(f"unsupported statement {type(node).__name__} (line {node.lineno})")

    def bind(self, target: ast.expr, value: object) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
            self.assigned = value
        elif isinstance(target, ast.Tuple | ast.List) and isinstance(value, tuple | list):
            if len(target.elts) != len(value):
                raise ProgramError("unpacking: lengths differ")
            for t, v in zip(target.elts, value, strict=True):
                self.bind(t, v)
        else:
            raise ProgramError(f"unsupported assignment target {type(target).__name__}")

    def lookup(self, name: str) -> object:
        if name in self.names:
            return self.names[name]
        if name in _FUNCTIONS:
            return _FUNCTIONS[name]
        raise ProgramError(f"undefined name {name!r}")

    def binary(self, op: ast.operator, left: object, right: object) -> float | int:
        if type(op) not in _BINARY:
            raise ProgramError(f"unsupported operator {type(op).__name__}")
        left, right = _number(left), _number(right)
        if isinstance(op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ProgramError(f"exponent out of range: {right!r}")
        try:
            return _number(_BINARY[type(op)](left, right))
        except (ZeroDivisionError, OverflowError) as err:
            raise ProgramError(str(err)) from err

    def value(self, node: ast.expr) -> object:
        if isinstance(node, ast.Constant):
            return _number(node.value)
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.value(node.left), self.value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](_number(self.value(node.operand)))
        if isinstance(node, ast.Tuple | ast.List):
            return [_number(self.value(e)) for e in node.elts]
        if isinstance(node, ast.Call) and not node.keywords:
            function = self.function(node.func)
            args = [self.value(a) for a in node.args]
            try:
                result = function(*args)
            except (TypeError, ValueError, OverflowError) as err:
                raise ProgramError(str(err)) from err
            return _number(result)
        raise ProgramError(f"unsupported expression {type(node).__name__}")

    def function(self, node: ast.expr):
        if isinstance(node, ast.Name):
            found = self.lookup(node.id)
            if callable(found):
                return found
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and self.names.get(node.value.id) is _MATH
            and node.attr in _MATH
        ):
            return _MATH[node.attr]
        raise ProgramError(f"unsupported function {ast.unparse(node)!r}")


def run_program(code: str) -> float | int:
    """The number ``code`` computes: its ``answer`` variable, else its last ``print``, else its
    last assignment. Raises :class:`ProgramError` on anything it does not understand."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as err:
        raise ProgramError(f"not Python: {err}") from err
    interpreter = _Interpreter()
    try:
        interpreter.run(tree)
    except RecursionError as err:  # a deeply nested expression
        raise ProgramError("expression nested too deeply") from err
    for result in (interpreter.names.get(RESULT_NAME), interpreter.printed, interpreter.assigned):
        if result is not None:
            return _number(result)
    raise ProgramError("the program computes nothing")


def program_answer(reply: str) -> str:
    """A program reply's result as a short answer ("18", "2.5"); empty when it does not run."""
    try:
        result = run_program(program_text(reply))
    except ProgramError:
        return ""
    if isinstance(result, float):
        if abs(result - round(result)) < 1e-9:
            return str(int(round(result)))
        return format(round(result, 6), "f").rstrip("0").rstrip(".")
    return str(result)
