#!/usr/bin/env python3
"""Generates Keel's Kafka message codec from Apache Kafka's JSON message schemas.

Usage (from the repository root):
    python3 net/kafka/codegen/generate.py ../shared/kafka-protocol/schemas [--out DIR]

Writes, under DIR (default: the repository root):
    net/include/keel/net/kafka/messages.h   the message structs and the API table
    net/src/kafka/messages.cc               their decoders and encoders
    tests/net/kafka_samples.h               fill_sample(): populated messages for the tests

The output is committed, so a checkout builds without the schemas. It is run through clang-format
(the repository's .clang-format) when clang-format is on PATH, so regeneration is reproducible.
Standard library only.
"""

import json
import os
import re
import shutil
import subprocess
import sys

# The APIs we generate, request and response each (Kafka names, without Request/Response).
APIS = [
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "DescribeConfigs",
    "CreatePartitions",
    "DeleteGroups",
    "OffsetDelete",
    "DescribeCluster",
]
HEADERS = ["RequestHeader", "ResponseHeader"]

REGEN_COMMAND = "python3 net/kafka/codegen/generate.py ../shared/kafka-protocol/schemas"
INF = 1 << 15

INT_TYPES = {
    "int8": ("int8_t", -(1 << 7), (1 << 7) - 1),
    "int16": ("int16_t", -(1 << 15), (1 << 15) - 1),
    "int32": ("int32_t", -(1 << 31), (1 << 31) - 1),
    "int64": ("int64_t", -(1 << 63), (1 << 63) - 1),
    "uint16": ("uint16_t", 0, (1 << 16) - 1),
    "uint32": ("uint32_t", 0, (1 << 32) - 1),
}
PRIMITIVES = set(INT_TYPES) | {"bool", "float64", "uuid", "string", "bytes", "records"}
CPP_KEYWORDS = {
    "and", "auto", "bool", "break", "case", "catch", "char", "class", "const", "continue",
    "default", "delete", "do", "double", "else", "enum", "explicit", "export", "extern", "false",
    "float", "for", "friend", "goto", "if", "inline", "int", "long", "namespace", "new", "not",
    "operator", "or", "private", "protected", "public", "register", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "template", "this", "throw", "true", "try", "typedef",
    "union", "unsigned", "using", "virtual", "void", "volatile", "while", "xor",
}
# Names the message structs themselves declare.
RESERVED_MEMBERS = {"api_key", "lowest_version", "highest_version", "flexible_from", "decode",
                    "encode"}


def fail(msg):
    sys.exit("generate.py: " + msg)


def load_schema(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # Strip // comments outside strings (the schemas have no "//" inside strings but be careful).
    out = []
    for line in text.splitlines():
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\" and in_str:
                i += 2
                continue
            if c == '"':
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return json.loads("\n".join(out))


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def member_name(name):
    s = snake(name)
    return s + "_" if s in CPP_KEYWORDS else s


def parse_versions(spec):
    """'3' / '0-7' / '9+' / 'none' -> (lo, hi) or None."""
    if spec is None:
        return None
    spec = str(spec).strip()
    if spec == "none":
        return None
    if spec.endswith("+"):
        return (int(spec[:-1]), INF)
    if "-" in spec:
        lo, hi = spec.split("-")
        return (int(lo), int(hi))
    return (int(spec), int(spec))


def range_cond(r, var="version"):
    """A C++ condition for 'var in r'; None when always true."""
    if r is None:
        return "false"
    lo, hi = r
    parts = []
    if lo > 0:
        parts.append(f"{var} >= {lo}")
    if hi < INF:
        parts.append(f"{var} <= {hi}")
    return " && ".join(parts) if parts else None


def and_conds(*conds):
    cs = [c for c in conds if c is not None]
    if "false" in cs:
        return "false"
    if not cs:
        return None
    return " && ".join(f"({c})" if "&&" in c or "||" in c else c for c in cs)


def not_cond(c):
    if c is None:
        return "false"
    if c == "false":
        return None
    return f"!({c})"


class Field:
    def __init__(self, js, msg):
        self.js = js
        self.name = js["name"]
        self.member = member_name(self.name)
        self.type = js["type"]
        self.versions = parse_versions(js.get("versions"))
        self.nullable = parse_versions(js.get("nullableVersions"))
        self.tag = js.get("tag")
        self.tagged = parse_versions(js.get("taggedVersions")) if self.tag is not None else None
        self.default = js.get("default")
        self.ignorable = js.get("ignorable", False)
        self.flexible_override = "flexibleVersions" in js
        self.flexible_versions = parse_versions(js.get("flexibleVersions"))
        self.is_array = self.type.startswith("[]")
        self.elem = self.type[2:] if self.is_array else self.type
        self.is_struct = self.elem not in PRIMITIVES
        self.fields = [Field(f, msg) for f in js.get("fields", [])]
        if self.versions is None:
            fail(f"{msg}.{self.name}: no versions")

    def nullable_anywhere(self):
        if self.nullable is None:
            return False
        lo = max(self.nullable[0], self.versions[0])
        hi = min(self.nullable[1], self.versions[1])
        return lo <= hi

    def nullable_everywhere(self):
        return (self.nullable is not None and self.nullable[0] <= self.versions[0]
                and self.nullable[1] >= self.versions[1])


class Message:
    def __init__(self, js):
        self.js = js
        self.name = js["name"]
        self.cpp = snake(self.name)
        self.kind = js["type"]
        self.api_key = js.get("apiKey", -1)
        valid = parse_versions(js["validVersions"])
        lo, hi = valid
        if js.get("latestVersionUnstable"):
            hi -= 1
        self.lowest, self.highest = lo, hi
        flex = parse_versions(js.get("flexibleVersions", "none"))
        self.flexible_from = flex[0] if flex else -1
        self.fields = [Field(f, self.name) for f in js["fields"]]
        self.common = {c["name"]: [Field(f, self.name) for f in c["fields"]]
                       for c in js.get("commonStructs", [])}
        # Struct types in dependency order (a struct after every struct it holds).
        self.structs = []  # (type name, fields)
        self.struct_fields = {}
        self._collect(self.fields)
        for name, fields in self.common.items():
            if name not in self.struct_fields:
                self._add_struct(name, fields)
        top_members = {f.member for f in self.fields} | RESERVED_MEMBERS
        for f in self.fields:
            if f.member in RESERVED_MEMBERS:
                fail(f"{self.name}.{f.name} clashes with a generated member")
        # A struct type named like a member of the message (FetchRequest's ReplicaState field of
        # type ReplicaState) takes the suffix _data: a type and a member cannot share a scope.
        self.type_cpp = {}
        for name, _ in self.structs:
            t = snake(name)
            if t in top_members or t == self.cpp:
                t += "_data"
            if t in top_members or t in self.type_cpp.values():
                fail(f"{self.name}: struct type {name} clashes with a member name")
            self.type_cpp[name] = t

    def _collect(self, fields):
        for f in fields:
            if not f.is_struct:
                continue
            if f.fields:
                self._collect(f.fields)
                if f.elem in self.struct_fields:
                    if [g.name for g in self.struct_fields[f.elem]] != [g.name for g in f.fields]:
                        fail(f"{self.name}: struct {f.elem} declared twice, differently")
                else:
                    self._add_struct(f.elem, f.fields)
            elif f.elem in self.common:
                if f.elem not in self.struct_fields:
                    self._collect(self.common[f.elem])
                    self._add_struct(f.elem, self.common[f.elem])
            elif f.elem not in self.struct_fields:
                fail(f"{self.name}.{f.name}: unknown struct type {f.elem}")

    def _add_struct(self, name, fields):
        self.struct_fields[name] = fields
        self.structs.append((name, fields))


# ---------------------------------------------------------------------------------------------
# C++ types and defaults


def elem_cpp(f, msg):
    e = f.elem
    if e in INT_TYPES:
        return INT_TYPES[e][0]
    if e == "bool":
        return "bool"
    if e == "float64":
        return "double"
    if e == "uuid":
        return "uuid"
    if e == "string":
        return "std::string"
    if e == "bytes":
        return "std::vector<std::byte>"
    if e == "records":
        return "record_set"
    return f"{msg.cpp}::{msg.type_cpp[e]}"


def member_cpp(f, msg):
    t = elem_cpp(f, msg)
    if f.is_array:
        t = f"std::vector<{t}>"
        return f"std::optional<{t}>" if f.nullable_anywhere() else t
    if f.elem in ("string", "bytes") or f.is_struct:
        return f"std::optional<{t}>" if f.nullable_anywhere() else t
    return t


def int_literal(type_name, value):
    cpp, lo, hi = INT_TYPES[type_name]
    v = int(str(value), 0)
    if not lo <= v <= hi:
        fail(f"default {value} out of range for {type_name}")
    if v == lo and lo < 0:
        return f"std::numeric_limits<{cpp}>::min()"
    return str(v)


def default_init(f):
    """The member initializer ('' for none), from the schema default."""
    d = f.default
    if f.elem == "uuid" and not f.is_array:
        return "{}"
    if f.is_array or f.is_struct or f.elem in ("bytes", "records"):
        return ""
    if f.elem in INT_TYPES:
        return " = " + int_literal(f.elem, d if d is not None else 0)
    if f.elem == "bool":
        return " = " + ("true" if str(d).lower() == "true" else "false")
    if f.elem == "float64":
        return " = " + (repr(float(d)) if d is not None else "0.0")
    if f.elem == "string":
        if d is None or d == "null" or d == "":
            return ""
        return " = " + json.dumps(d)
    return ""


def is_default_expr(f, v, msg):
    """A C++ expression that is true when member v holds its default value."""
    init = default_init(f)
    if f.is_array:
        return f"{v} == {member_cpp(f, msg)}{{}}"
    if f.elem in INT_TYPES or f.elem in ("bool", "float64"):
        return f"{v} == {init[3:]}"
    if f.elem == "string" and init:
        return f"{v} == {init[3:]}"
    return f"{v} == {member_cpp(f, msg)}{{}}"


# ---------------------------------------------------------------------------------------------
# Decoding and encoding statements


def compact_expr(f):
    if f.flexible_override:
        c = range_cond(f.flexible_versions)
        return "true" if c is None else ("false" if c == "false" else f"flexible && {c}")
    return "flexible"


def read_elem(f, msg, target, r, c):
    """Statements reading one non-array value of f's element type into target."""
    e = f.elem
    if e in INT_TYPES or e in ("bool", "float64", "uuid"):
        getter = {"float64": "get_float64"}.get(e, f"get_{e}")
        return [f"{target} = {r}.{getter}();"]
    if e == "string":
        return [f"{target} = {r}.get_string({c});"]
    if e == "bytes":
        return [f"{target} = {r}.get_bytes({c});"]
    return [f"read_struct({r}, {target}, version);"]


def read_field(f, msg, v, r):
    c = compact_expr(f)
    t = f"{v}.{f.member}"
    if f.nullable_everywhere():
        reject_null = []
    elif f.nullable_anywhere():
        reject_null = [f"if ({not_cond(range_cond(f.nullable))}) {r}.fail();"]
    else:
        reject_null = [f"{r}.fail();"]
    if f.is_array:
        lines = ["{", f"const int32_t n = {r}.get_array_length({c});", "if (n < 0) {"]
        if f.nullable_anywhere():
            lines.append(f"{t}.reset();")
        lines += reject_null
        lines.append("} else {")
        if f.nullable_anywhere():
            lines.append(f"auto& out = {t}.emplace();")
        else:
            lines.append(f"auto& out = {t};")
        lines += ["out.clear();", f"for (int32_t i = 0; i < n && {r}.ok(); ++i) {{",
                  "out.emplace_back();"]
        lines += read_elem(f, msg, "out.back()", r, c)
        lines += ["}", "}", "}"]
        return lines
    if f.elem == "records":
        return [f"{t} = {r}.get_records({c});"] + (
            [f"if ({t}.null) {{"] + reject_null + ["}"] if reject_null else [])
    if f.elem in ("string", "bytes") and f.nullable_anywhere():
        getter = "get_nullable_string" if f.elem == "string" else "get_nullable_bytes"
        return [f"{t} = {r}.{getter}({c});"] + (
            [f"if (!{t}) {{"] + reject_null + ["}"] if reject_null else [])
    if f.is_struct and f.nullable_anywhere():
        return ["{", f"const int8_t present = {r}.get_int8();", "if (present < 0) {",
                f"{t}.reset();"] + reject_null + ["} else {",
                f"read_struct({r}, {t}.emplace(), version);", "}", "}"]
    return read_elem(f, msg, t, r, c)


def write_elem(f, msg, value, w, c):
    e = f.elem
    if e in INT_TYPES or e in ("bool", "float64", "uuid"):
        return [f"{w}.put_{e}({value});"]
    if e == "string":
        return [f"{w}.put_string({value}, {c});"]
    if e == "bytes":
        return [f"{w}.put_bytes({value}, {c});"]
    return [f"write_struct({w}, {value}, version);"]


def write_field(f, msg, v, w):
    c = compact_expr(f)
    t = f"{v}.{f.member}"
    null_ok = None if f.nullable_everywhere() else (
        range_cond(f.nullable) if f.nullable_anywhere() else "false")
    # A null in a version where the field is not nullable is written as empty.
    if f.is_array:
        lines = []
        if f.nullable_anywhere():
            lines += [f"if (!{t}) {{"]
            if null_ok is None:
                lines.append(f"{w}.put_array_length(-1, {c});")
            elif null_ok == "false":
                lines.append(f"{w}.put_array_length(0, {c});")
            else:
                lines.append(f"{w}.put_array_length(({null_ok}) ? -1 : 0, {c});")
            lines += ["} else {"]
            seq = f"(*{t})"
        else:
            lines += ["{"]
            seq = t
        lines += [f"{w}.put_array_length(static_cast<int32_t>({seq}.size()), {c});",
                  f"for (const auto& e : {seq}) {{"]
        lines += write_elem(f, msg, "e", w, c)
        lines += ["}", "}"]
        return lines
    if f.elem == "records":
        if null_ok is None:
            return [f"{w}.put_records({t}, {c});"]
        cond = f"!{t}.null" if null_ok == "false" else f"!{t}.null || ({null_ok})"
        return [f"if ({cond}) {{", f"{w}.put_records({t}, {c});", "} else {",
                f"{w}.put_length(0, {c}, true);", "}"]
    if f.elem in ("string", "bytes") and f.nullable_anywhere():
        put = "put_nullable_string" if f.elem == "string" else "put_nullable_bytes"
        if null_ok is None:
            return [f"{w}.{put}({t}, {c});"]
        cond = f"{t}" if null_ok == "false" else f"{t} || ({null_ok})"
        return [f"if ({cond}) {{", f"{w}.{put}({t}, {c});", "} else {",
                f"{w}.put_length(0, {c}, {'false' if f.elem == 'string' else 'true'});", "}"]
    if f.is_struct and f.nullable_anywhere():
        return [f"if (!{t}) {{", f"{w}.put_int8(-1);", "} else {", f"{w}.put_int8(1);",
                f"write_struct({w}, *{t}, version);", "}"]
    return write_elem(f, msg, t, w, c)


def intersect(a, b):
    if a is None or b is None:
        return None
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None


def regular_cond(f):
    """When f is on the wire as a regular (untagged) field."""
    if f.tag is None:
        return range_cond(f.versions)
    t = intersect(f.versions, f.tagged)
    if t is None:
        return range_cond(f.versions)
    lo, hi = f.versions
    below = (lo, t[0] - 1) if lo < t[0] else None
    above = (t[1] + 1, hi) if t[1] < hi else None
    parts = [range_cond(r) for r in (below, above) if r is not None]
    if not parts:
        return "false"
    return " || ".join(f"({p})" for p in parts) if len(parts) > 1 else parts[0]


def tagged_cond(f):
    return range_cond(intersect(f.versions, f.tagged))


def guarded(cond, lines):
    if cond is None:
        return lines
    if cond == "false":
        return []
    return [f"if ({cond}) {{"] + lines + ["}"]


def struct_functions(cpp_type, fields, msg):
    """read_struct / write_struct overloads for one struct type."""
    flex = f"version >= {msg.flexible_from}" if msg.flexible_from >= 0 else "false"
    tagged = sorted([f for f in fields if f.tag is not None], key=lambda f: f.tag)
    if len({f.tag for f in tagged}) != len(tagged):
        fail(f"{msg.name}: duplicate tags in {cpp_type}")
    out = []
    # Decoder.
    out.append(f"void read_struct(reader& r, {cpp_type}& v, [[maybe_unused]] int16_t version) {{")
    out.append(f"[[maybe_unused]] const bool flexible = {flex};")
    for f in fields:
        out += guarded(regular_cond(f), read_field(f, msg, "v", "r"))
    out.append("if (flexible) {")
    if tagged:
        out.append("r.get_tagged_fields([&](uint32_t tag, reader& sub) {")
        out.append("switch (tag) {")
        for f in tagged:
            out.append(f"case {f.tag}:")
            out += guarded(tagged_cond(f), read_field(f, msg, "v", "sub"))
            out.append("break;")
        out += ["default:", "break;", "}", "});"]
    else:
        out.append("r.get_tagged_fields([](uint32_t, reader&) {});")
    out.append("}")
    out.append("}")
    out.append("")
    # Encoder. A non-ignorable field that holds a non-default value in a version without it is
    # dropped silently, like an ignorable one (Kafka's generated code throws instead).
    out.append(
        f"void write_struct(writer& w, const {cpp_type}& v, [[maybe_unused]] int16_t version) {{")
    out.append(f"[[maybe_unused]] const bool flexible = {flex};")
    for f in fields:
        out += guarded(regular_cond(f), write_field(f, msg, "v", "w"))
    out.append("if (flexible) {")
    if tagged:
        out.append("uint32_t tagged = 0;")
        present = []
        for f in tagged:
            cond = and_conds(tagged_cond(f), f"!({is_default_expr(f, 'v.' + f.member, msg)})")
            present.append(cond)
            out += guarded(cond, ["++tagged;"])
        out.append("w.put_uvarint(tagged);")
        for f, cond in zip(tagged, present):
            body = ["writer t;"] + write_field(f, msg, "v", "t") + [
                f"w.put_uvarint({f.tag});", "w.put_uvarint(static_cast<uint32_t>(t.size()));",
                "w.append(t);"]
            out += guarded(cond, body)
    else:
        out.append("w.put_uvarint(0);")
    out.append("}")
    out.append("}")
    out.append("")
    return out


def struct_decl(name, fields, msg):
    lines = [f"struct {msg.type_cpp[name]} {{"]
    for f in fields:
        lines.append(f"{member_cpp(f, msg)} {f.member}{default_init(f)};")
    lines.append(f"bool operator==(const {msg.type_cpp[name]}&) const = default;")
    lines.append("};")
    return lines


def message_decl(msg):
    lines = []
    about = msg.js.get("about")
    kind = {"request": "request", "response": "response", "header": "header"}[msg.kind]
    lines.append(f"// {msg.name} ({kind}"
                 + (f", api key {msg.api_key}" if msg.api_key >= 0 else "") + ").")
    if about:
        lines.append(f"// {about}")
    lines.append(f"struct {msg.cpp} {{")
    lines.append(f"static constexpr int16_t api_key = {msg.api_key};")
    lines.append(f"static constexpr int16_t lowest_version = {msg.lowest};")
    lines.append(f"static constexpr int16_t highest_version = {msg.highest};")
    lines.append(f"static constexpr int16_t flexible_from = {msg.flexible_from};")
    lines.append("")
    for name, fields in msg.structs:
        lines += struct_decl(name, fields, msg)
        lines.append("")
    for f in msg.fields:
        lines.append(f"{member_cpp(f, msg)} {f.member}{default_init(f)};")
    lines.append("")
    lines.append("// Reads the body of this version; false (and r failed) on malformed input. The")
    lines.append("// fields start from their defaults; records point into r's input.")
    lines.append("bool decode(reader& r, int16_t version);")
    lines.append("// Writes the fields this version has (others are dropped silently).")
    lines.append("void encode(writer& w, int16_t version) const;")
    lines.append(f"bool operator==(const {msg.cpp}&) const = default;")
    lines.append("};")
    lines.append("")
    return lines


def message_defs(msg):
    out = []
    for name, fields in msg.structs:
        out += struct_functions(f"{msg.cpp}::{msg.type_cpp[name]}", fields, msg)
    out += struct_functions(msg.cpp, msg.fields, msg)
    return out


def message_methods(msg):
    return [
        f"bool {msg.cpp}::decode(reader& r, int16_t version) {{",
        f"*this = {msg.cpp}{{}};",
        "read_struct(r, *this, version);",
        "return r.ok();",
        "}",
        "",
        f"void {msg.cpp}::encode(writer& w, int16_t version) const {{",
        "write_struct(w, *this, version);",
        "}",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Test samples


def sample_elem(f, msg, target):
    e = f.elem
    if e in INT_TYPES:
        return [f"{target} = static_cast<{INT_TYPES[e][0]}>(next_sample(seed));"]
    if e == "bool":
        return [f"{target} = !{target};"]
    if e == "float64":
        return [f"{target} = 0.5 + next_sample(seed);"]
    if e == "uuid":
        return [f"{target} = sample_uuid(seed);"]
    if e == "string":
        return [f"{target} = sample_string(seed);"]
    if e == "bytes":
        return [f"{target} = sample_bytes(seed);"]
    if e == "records":
        return [f"{target} = sample_records(seed);"]
    return [f"fill_sample({target}, version, seed);"]


def sample_field(f, msg, v):
    t = f"{v}.{f.member}"
    if f.is_array:
        target = f"{t}.emplace()" if f.nullable_anywhere() else t
        lines = ["{", f"auto& out = {target};", "for (int i = 0; i < 2; ++i) {",
                 "out.emplace_back();"]
        lines += sample_elem(f, msg, "out.back()")
        lines += ["}", "}"]
        return lines
    if f.nullable_anywhere() and (f.is_struct or f.elem in ("string", "bytes")):
        inner = f"{t}.emplace()"
        if f.is_struct:
            return [f"fill_sample({inner}, version, seed);"]
        return [f"{inner};"] + sample_elem(f, msg, f"*{t}")
    return sample_elem(f, msg, t)


def sample_functions(cpp_type, fields, msg):
    out = [f"inline void fill_sample({cpp_type}& v, [[maybe_unused]] int16_t version, "
           "[[maybe_unused]] uint32_t& seed) {"]
    for f in fields:
        out += guarded(range_cond(f.versions), sample_field(f, msg, "v"))
    out += ["}", ""]
    return out


# ---------------------------------------------------------------------------------------------
# Output


def banner(source_note):
    return [
        "// Generated by net/kafka/codegen/generate.py from Apache Kafka's message schemas.",
        "// DO NOT EDIT. Regenerate from the repository root with:",
        f"//   {REGEN_COMMAND}",
        f"// {source_note}",
    ]


def render_header(msgs):
    lines = banner("The message structs; the codec primitives are in protocol.h.")
    lines += [
        "#pragma once",
        "",
        "#include <array>",
        "#include <cstddef>",
        "#include <cstdint>",
        "#include <limits>",
        "#include <optional>",
        "#include <span>",
        "#include <string>",
        "#include <string_view>",
        "#include <type_traits>",
        "#include <vector>",
        "",
        '#include "keel/net/kafka/protocol.h"',
        "",
        "namespace keel::net::kafka {",
        "",
        "// One API of the generated table: its key, Kafka's name for it, the versions generated",
        "// (an unstable latest version left out) and the first flexible version (-1: none).",
        "struct api_info {",
        "int16_t api_key;",
        "std::string_view name;",
        "int16_t lowest_version;",
        "int16_t highest_version;",
        "int16_t flexible_from;",
        "};",
        "",
        "// Every generated API, by ascending key.",
        "std::span<const api_info> generated_apis();",
        "// The API's entry, or nullptr when the key is not generated.",
        "const api_info* find_api(int16_t api_key);",
        "// Whether this version of the API uses the flexible encodings (compact lengths, tagged",
        "// fields); versions above the highest generated count as flexible when the API has any.",
        "// False for an unknown API.",
        "bool is_flexible(int16_t api_key, int16_t api_version);",
        "// The request header version for a request: 2 when flexible, else 1 (0 for",
        "// ControlledShutdown v0, 1 for an unknown API).",
        "int16_t request_header_version(int16_t api_key, int16_t api_version);",
        "// The response header version: 1 when flexible, else 0; ApiVersions always uses 0.",
        "int16_t response_header_version(int16_t api_key, int16_t api_version);",
        "",
    ]
    for m in msgs:
        lines += message_decl(m)
    reqs = [m for m in msgs if m.kind == "request"]
    resps = [m for m in msgs if m.kind == "response"]
    for kind, group in (("request", reqs), ("response", resps)):
        lines += [
            f"// Calls f(std::type_identity<T>{{}}) with the {kind} type of api_key; false when",
            "// the key is not generated.",
            "template <class F>",
            f"bool visit_{kind}_type(int16_t api_key, F&& f) {{",
            "switch (api_key) {",
        ]
        for m in sorted(group, key=lambda m: m.api_key):
            lines += [f"case {m.api_key}:", f"f(std::type_identity<{m.cpp}>{{}});", "return true;"]
        lines += ["default:", "return false;", "}", "}", ""]
    lines += [
        "// Calls f(std::type_identity<T>{}) for every generated request and response type.",
        "template <class F>",
        "void for_each_message_type(F&& f) {",
    ]
    for m in sorted(reqs + resps, key=lambda m: (m.api_key, m.kind)):
        lines.append(f"f(std::type_identity<{m.cpp}>{{}});")
    lines += ["}", "", "}  // namespace keel::net::kafka", ""]
    return "\n".join(lines)


def render_source(msgs):
    apis = sorted([m for m in msgs if m.kind == "request"], key=lambda m: m.api_key)
    lines = banner("The decoders and encoders of messages.h.")
    lines += [
        '#include "keel/net/kafka/messages.h"',
        "",
        "#include <algorithm>",
        "",
        "namespace keel::net::kafka {",
        "namespace {",
        "",
        "constexpr api_info apis[] = {",
    ]
    for m in apis:
        name = m.name[: -len("Request")]
        lines.append(f'{{{m.api_key}, "{name}", {m.lowest}, {m.highest}, {m.flexible_from}}},')
    lines += ["};", ""]
    for m in msgs:
        lines += message_defs(m)
    lines += [
        "}  // namespace",
        "",
        "std::span<const api_info> generated_apis() { return apis; }",
        "",
        "const api_info* find_api(int16_t api_key) {",
        "for (const auto& a : apis) {",
        "if (a.api_key == api_key) return &a;",
        "}",
        "return nullptr;",
        "}",
        "",
        "bool is_flexible(int16_t api_key, int16_t api_version) {",
        "const api_info* a = find_api(api_key);",
        "return a != nullptr && a->flexible_from >= 0 && api_version >= a->flexible_from;",
        "}",
        "",
        "int16_t request_header_version(int16_t api_key, int16_t api_version) {",
        "// ControlledShutdown (7) v0 is the only request with header v0.",
        "if (api_key == 7 && api_version == 0) return 0;",
        "return is_flexible(api_key, api_version) ? 2 : 1;",
        "}",
        "",
        "int16_t response_header_version(int16_t api_key, int16_t api_version) {",
        "// KIP-511: ApiVersions responses use header v0 at every version, so a client can read",
        "// the reply to a version the broker does not know.",
        "if (api_key == 18) return 0;",
        "return is_flexible(api_key, api_version) ? 1 : 0;",
        "}",
        "",
    ]
    for m in msgs:
        lines += message_methods(m)
    lines += ["}  // namespace keel::net::kafka", ""]
    return "\n".join(lines)


def render_samples(msgs):
    lines = banner("Populated messages for the codec tests: fill_sample(v, version, seed) sets"
                   " every field of that version to a non-default value.")
    lines += [
        "#pragma once",
        "",
        "#include <cstdint>",
        "#include <string>",
        "#include <vector>",
        "",
        '#include "keel/net/kafka/messages.h"',
        "",
        "namespace keel::net::kafka::testing {",
        "",
        "inline uint32_t next_sample(uint32_t& seed) { return ++seed % 100 + 1; }",
        "inline uuid sample_uuid(uint32_t& seed) {",
        "uuid u{};",
        "for (auto& b : u) b = static_cast<uint8_t>(next_sample(seed));",
        "return u;",
        "}",
        'inline std::string sample_string(uint32_t& seed) { return "s" + '
        "std::to_string(next_sample(seed)); }",
        "inline std::vector<std::byte> sample_bytes(uint32_t& seed) {",
        "return {std::byte{1}, static_cast<std::byte>(next_sample(seed)), std::byte{3}};",
        "}",
        "// Records point into static storage: a few bytes, not a real batch (the codec does not",
        "// look inside).",
        "inline record_set sample_records(uint32_t& seed) {",
        "static const std::byte data[] = {std::byte{0}, std::byte{1}, std::byte{2}, std::byte{3},",
        "std::byte{4}, std::byte{5}, std::byte{6}, std::byte{7}};",
        "record_set r;",
        "r.pieces.push_back(std::span<const std::byte>(data).subspan(0, 1 + next_sample(seed) % 4));",
        "r.pieces.push_back(std::span<const std::byte>(data).subspan(4));",
        "return r;",
        "}",
        "",
    ]
    for m in msgs:
        for name, fields in m.structs:
            lines += sample_functions(f"{m.cpp}::{m.type_cpp[name]}", fields, m)
        lines += sample_functions(m.cpp, m.fields, m)
    lines += ["}  // namespace keel::net::kafka::testing", ""]
    return "\n".join(lines)


def clang_format(text, assume_path):
    exe = shutil.which("clang-format")
    if exe is None:
        print("generate.py: clang-format not found; output left unformatted", file=sys.stderr)
        return text
    res = subprocess.run([exe, "--style=file", f"--assume-filename={assume_path}"],
                         input=text, capture_output=True, text=True, check=True)
    return res.stdout


def main(argv):
    args = list(argv[1:])
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    out = repo
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    schemas = args[0]
    msgs = []
    for name in HEADERS:
        msgs.append(Message(load_schema(os.path.join(schemas, name + ".json"))))
    for api in APIS:
        req = Message(load_schema(os.path.join(schemas, api + "Request.json")))
        resp = Message(load_schema(os.path.join(schemas, api + "Response.json")))
        if (req.api_key, req.lowest, req.highest) != (resp.api_key, resp.lowest, resp.highest):
            fail(f"{api}: request and response versions differ")
        msgs += [req, resp]
    outputs = {
        "net/include/keel/net/kafka/messages.h": render_header(msgs),
        "net/src/kafka/messages.cc": render_source(msgs),
        "tests/net/kafka_samples.h": render_samples(msgs),
    }
    for rel, text in outputs.items():
        text = clang_format(text, os.path.join(repo, rel))
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main(sys.argv)
