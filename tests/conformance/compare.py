#!/usr/bin/python3
"""Conformance of proto/ with Envoy's v3 API: names, numbers, types and labels.

remora's proto/ is a hand-written subset of Envoy's API and must stay wire- and
JSON-compatible with it.  This compares two protoc descriptor sets -- ours (proto/ plus the
well-known types from /usr/include) and the reference (the Envoy API shipped in the npm package
@grpc/grpc-js-xds, fetched by fetch_envoy_api.sh) -- and reports, with its full path:

  * a message, enum or service of ours that the reference does not have (by full name);
  * a field of ours that the reference lacks, or whose number, type, type_name, label,
    json_name, proto3-optional flag or packed option differ; a field whose oneof differs
    (in a oneof here and not there, or the other way round, or in another oneof);
  * an enum value whose number differs or that the reference lacks;
  * a method whose input/output type or streaming flags differ, or that the reference lacks;
  * a message or enum declared under another syntax (proto2/proto3) than in the reference.

What we lack is fine: proto/ is a subset.  The reference snapshot is older than Envoy's main:
declarations added since are listed, checked by hand, in newer_than_reference.txt, which is
laid over the reference where it lacks them (and compared with it where it has them).  Informational notes (not failures): a field, enum
value or message of ours that Envoy marks deprecated; a message or enum declared in another
file than in Envoy (the wire format and type URLs do not depend on the file).

    tests/conformance/compare.py                 fetch (cached), run protoc on both, compare
    tests/conformance/compare.py OURS.pb REF.pb --files F...   compare two descriptor sets

Exit status 0 when there is no mismatch, 1 when there are, 2 on a setup error (npm fetch
failed, protoc missing, a .proto that does not compile).  Run with Debian's /usr/bin/python3
(python3-protobuf); protoc comes from Debian's protobuf-compiler.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

from google.protobuf import descriptor_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FETCH = os.path.join(HERE, "fetch_envoy_api.sh")
SUPPLEMENT = os.path.join(HERE, "newer_than_reference.txt")
SUPPLEMENT_FILE = "(newer_than_reference.txt)"
WKT_DIR = "/usr/include"
FDP = descriptor_pb2.FieldDescriptorProto


class SetupError(Exception):
    pass


def ref_version():
    with open(FETCH) as f:
        m = re.search(r"^VERSION=(\S+)$", f.read(), re.M)
    return m.group(1)


# ---- indexing a descriptor set ------------------------------------------------------------

class Index:
    """Every message, enum and service of a FileDescriptorSet by full name (no leading dot)."""

    def __init__(self, fds):
        self.messages = {}   # full name -> (DescriptorProto, file name)
        self.enums = {}      # full name -> (EnumDescriptorProto, file name)
        self.services = {}   # full name -> (ServiceDescriptorProto, file name)
        self.files = {}      # file name -> FileDescriptorProto
        self.extra = set()   # "Message.field" / "Enum.VALUE" laid over by the supplement
        for f in fds.file:
            self.files[f.name] = f
            pkg = f.package + "." if f.package else ""
            for m in f.message_type:
                self._add_message(pkg + m.name, m, f.name)
            for e in f.enum_type:
                self.enums[pkg + e.name] = (e, f.name)
            for s in f.service:
                self.services[pkg + s.name] = (s, f.name)

    def _add_message(self, full, m, fname):
        self.messages[full] = (m, fname)
        for n in m.nested_type:
            self._add_message(full + "." + n.name, n, fname)
        for e in m.enum_type:
            self.enums[full + "." + e.name] = (e, fname)


def top_level_names(f):
    """Full names of the messages (recursively), enums and services declared in file f."""
    pkg = f.package + "." if f.package else ""
    msgs, enums = [], []

    def walk(full, m):
        msgs.append(full)
        for n in m.nested_type:
            walk(full + "." + n.name, n)
        for e in m.enum_type:
            enums.append(full + "." + e.name)

    for m in f.message_type:
        walk(pkg + m.name, m)
    enums += [pkg + e.name for e in f.enum_type]
    return msgs, enums, [pkg + s.name for s in f.service]


# ---- declarations newer than the reference snapshot ------------------------------------------

SCALARS = {n[len("TYPE_"):].lower(): v for n, v in FDP.Type.items()
           if n not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")}


def json_name(name):
    """protoc's default json_name: lowerCamelCase of the field name."""
    out, up = [], False
    for c in name:
        if c == "_":
            up = True
        elif up:
            out.append(c.upper())
            up = False
        else:
            out.append(c)
    return "".join(out)


def _split(full):
    parent, _, name = full.rpartition(".")
    return parent, name


def apply_supplement(ref, path=SUPPLEMENT):
    """Lays the declarations of newer_than_reference.txt over the reference index where it lacks
    them.  Returns (mismatches, notes): an entry the reference has is compared with it."""
    bad, notes = [], []
    entries = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].split()
            if line:
                entries.append((f"{os.path.basename(path)}:{lineno}", line))

    def kind_of(type_name):
        full = type_name.lstrip(".")
        if full in ref.enums:
            return FDP.TYPE_ENUM
        if full in ref.messages:
            return FDP.TYPE_MESSAGE
        raise SetupError(f"{where}: unknown type {type_name}")

    for where, e in entries:
        kw, args = e[0], e[1:]
        try:
            if kw == "message" and len(args) == 1:
                if args[0] in ref.messages:
                    notes.append(f"{where}: message {args[0]} is in the reference now "
                                 f"(drop the entry)")
                else:
                    d = descriptor_pb2.DescriptorProto(name=_split(args[0])[1])
                    ref.messages[args[0]] = (d, SUPPLEMENT_FILE)
            elif kw == "enum" and len(args) == 1:
                if args[0] in ref.enums:
                    notes.append(f"{where}: enum {args[0]} is in the reference now "
                                 f"(drop the entry)")
                else:
                    d = descriptor_pb2.EnumDescriptorProto(name=_split(args[0])[1])
                    ref.enums[args[0]] = (d, SUPPLEMENT_FILE)
            elif kw == "field" and len(args) >= 3:
                parent, name = _split(args[0])
                if parent not in ref.messages:
                    raise SetupError(f"{where}: message {parent} neither in the reference nor "
                                     f"declared above")
                msg = ref.messages[parent][0]
                fd = FDP(name=name, number=int(args[1]), json_name=json_name(name),
                         label=FDP.LABEL_OPTIONAL)
                if args[2] in SCALARS:
                    fd.type = SCALARS[args[2]]
                elif args[2].startswith("."):
                    fd.type = kind_of(args[2])
                    fd.type_name = args[2]
                else:
                    raise SetupError(f"{where}: bad type {args[2]}")
                oneof = None
                for flag in args[3:]:
                    if flag == "repeated":
                        fd.label = FDP.LABEL_REPEATED
                    elif flag == "deprecated":
                        fd.options.deprecated = True
                    elif flag.startswith("oneof="):
                        oneof = flag[len("oneof="):]
                    else:
                        raise SetupError(f"{where}: unknown flag {flag}")
                have = [x for x in msg.field if x.name == name]
                if have:
                    _check_entry(where, args[0], fd, oneof, msg, have[0], bad, notes)
                    continue
                if oneof is not None:
                    names = [o.name for o in msg.oneof_decl]
                    if oneof not in names:
                        msg.oneof_decl.add(name=oneof)
                        names.append(oneof)
                    fd.oneof_index = names.index(oneof)
                msg.field.append(fd)
                ref.extra.add(args[0])
            elif kw == "value" and len(args) >= 2:
                parent, name = _split(args[0])
                if parent not in ref.enums:
                    raise SetupError(f"{where}: enum {parent} neither in the reference nor "
                                     f"declared above")
                en = ref.enums[parent][0]
                have = [v for v in en.value if v.name == name]
                if have:
                    if have[0].number != int(args[1]):
                        bad.append(f"{where}: value {args[0]} = {args[1]} here, "
                                   f"{have[0].number} in the reference")
                    else:
                        notes.append(f"{where}: value {args[0]} is in the reference now "
                                     f"(drop the entry)")
                    continue
                v = en.value.add(name=name, number=int(args[1]))
                ref.extra.add(args[0])
                if "deprecated" in args[2:]:
                    v.options.deprecated = True
            elif kw == "service" and len(args) == 1:
                if args[0] not in ref.services:
                    d = descriptor_pb2.ServiceDescriptorProto(name=_split(args[0])[1])
                    ref.services[args[0]] = (d, SUPPLEMENT_FILE)
            elif kw == "method" and len(args) >= 3:
                parent, name = _split(args[0])
                if parent not in ref.services:
                    raise SetupError(f"{where}: service {parent} unknown")
                svc = ref.services[parent][0]
                if any(m.name == name for m in svc.method):
                    notes.append(f"{where}: method {args[0]} is in the reference now "
                                 f"(drop the entry)")
                    continue
                svc.method.add(name=name, input_type=args[1], output_type=args[2],
                               client_streaming="client_streaming" in args[3:],
                               server_streaming="server_streaming" in args[3:])
            else:
                raise SetupError(f"{where}: cannot parse {' '.join(e)}")
        except ValueError as ex:
            raise SetupError(f"{where}: {ex}") from None
    return bad, notes


def _check_entry(where, full, fd, oneof, msg, have, bad, notes):
    diffs = []
    for attr in ("number", "type", "type_name", "label"):
        if getattr(fd, attr) != getattr(have, attr):
            diffs.append(f"{attr} {getattr(fd, attr)} here, {getattr(have, attr)} in the "
                         f"reference")
    if oneof != _oneof_of(msg, have):
        diffs.append(f"oneof {oneof} here, {_oneof_of(msg, have)} in the reference")
    for d in diffs:
        bad.append(f"{where}: field {full}: {d}")
    if not diffs:
        notes.append(f"{where}: field {full} is in the reference now (drop the entry)")


# ---- the comparison -----------------------------------------------------------------------

def _type_name(t):
    return FDP.Type.Name(t)[len("TYPE_"):].lower()


def _label_name(lb):
    return FDP.Label.Name(lb)[len("LABEL_"):].lower()


def _oneof_of(msg, field):
    """The name of the real (non-synthetic) oneof that field belongs to, or None."""
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return msg.oneof_decl[field.oneof_index].name


def _deprecated(opts):
    return opts.HasField("deprecated") and opts.deprecated


def compare_sets(ours, theirs, our_files, supplement=SUPPLEMENT):
    """Compares the declarations in our_files (names in ours) with theirs, overlaid with the
    supplement (newer_than_reference.txt; None for none).

    Returns (mismatches, notes): lists of "path: what" strings.
    """
    mine, ref = Index(ours), Index(theirs)
    bad, notes = apply_supplement(ref, supplement) if supplement else ([], [])
    for fname in sorted(our_files):
        f = mine.files.get(fname)
        if f is None:
            bad.append(f"{fname}: not in our descriptor set")
            continue
        where = f"proto/{fname}"
        msgs, enums, services = top_level_names(f)
        syntax = f.syntax or "proto2"
        for full, table in [(m, ref.messages) for m in msgs] + [(e, ref.enums) for e in enums]:
            rf = ref.files.get(table[full][1]) if full in table else None
            if rf is not None and (rf.syntax or "proto2") != syntax:
                bad.append(f"{where}: {full}: syntax {syntax} here, {rf.syntax or 'proto2'} in "
                           f"Envoy ({rf.name})")
        for full in msgs:
            _compare_message(full, mine.messages[full][0], ref, where, bad, notes)
        for full in enums:
            _compare_enum(full, mine.enums[full][0], ref, where, bad, notes)
        for full in services:
            _compare_service(full, mine.services[full][0], ref, where, bad)
    return bad, notes


def _compare_message(full, m, ref, where, bad, notes):
    path = f"{where}: message {full}"
    if full not in ref.messages:
        bad.append(f"{path}: no such message in the Envoy API")
        return
    r, rfile = ref.messages[full]
    if rfile == SUPPLEMENT_FILE:
        notes.append(f"{path}: newer than the reference, checked against {SUPPLEMENT_FILE}")
    elif rfile != where[len("proto/"):]:
        notes.append(f"{path}: declared in {rfile} in the Envoy API")
    if _deprecated(r.options):
        notes.append(f"{path}: deprecated in the Envoy API")
    if m.options.map_entry != r.options.map_entry:
        bad.append(f"{path}: map_entry {m.options.map_entry} here, {r.options.map_entry} in Envoy")
    rby_name = {x.name: x for x in r.field}
    rby_number = {x.number: x for x in r.field}
    for fd in m.field:
        fpath = f"{where}: field {full}.{fd.name}"
        rf = rby_name.get(fd.name)
        if rf is None:
            other = rby_number.get(fd.number)
            hint = f" (number {fd.number} is '{other.name}' there)" if other else ""
            reserved = any(rr.start <= fd.number < rr.end for rr in r.reserved_range)
            if reserved:
                hint += f" (number {fd.number} is reserved there)"
            if fd.name in r.reserved_name:
                hint += " (the name is reserved there)"
            bad.append(f"{fpath}: no such field in the Envoy API{hint}")
            continue
        diffs = []
        if fd.number != rf.number:
            diffs.append(f"number {fd.number} here, {rf.number} in Envoy")
        if fd.type != rf.type:
            diffs.append(f"type {_type_name(fd.type)} here, {_type_name(rf.type)} in Envoy")
        if fd.type_name != rf.type_name:
            diffs.append(f"type_name {fd.type_name or '-'} here, {rf.type_name or '-'} in Envoy")
        if fd.label != rf.label:
            diffs.append(f"label {_label_name(fd.label)} here, {_label_name(rf.label)} in Envoy")
        if fd.proto3_optional != rf.proto3_optional:
            diffs.append(f"proto3 optional {fd.proto3_optional} here, {rf.proto3_optional} "
                         f"in Envoy")
        if fd.json_name != rf.json_name:
            diffs.append(f"json_name {fd.json_name} here, {rf.json_name} in Envoy")
        mo, ro = _oneof_of(m, fd), _oneof_of(r, rf)
        if mo != ro:
            diffs.append(f"oneof {mo or '(none)'} here, {ro or '(none)'} in Envoy")
        mp = fd.options.packed if fd.options.HasField("packed") else None
        rp = rf.options.packed if rf.options.HasField("packed") else None
        if mp != rp:
            diffs.append(f"packed option {mp} here, {rp} in Envoy")
        for d in diffs:
            bad.append(f"{fpath}: {d}")
        if f"{full}.{fd.name}" in ref.extra and rfile != SUPPLEMENT_FILE:
            notes.append(f"{fpath}: newer than the reference, checked against "
                         f"{SUPPLEMENT_FILE}")
        if _deprecated(rf.options):
            notes.append(f"{fpath}: deprecated in the Envoy API")


def _compare_enum(full, e, ref, where, bad, notes):
    path = f"{where}: enum {full}"
    if full not in ref.enums:
        bad.append(f"{path}: no such enum in the Envoy API")
        return
    r, rfile = ref.enums[full]
    if rfile == SUPPLEMENT_FILE:
        notes.append(f"{path}: newer than the reference, checked against {SUPPLEMENT_FILE}")
    elif rfile != where[len("proto/"):]:
        notes.append(f"{path}: declared in {rfile} in the Envoy API")
    if _deprecated(r.options):
        notes.append(f"{path}: deprecated in the Envoy API")
    rby_name = {v.name: v for v in r.value}
    rby_number = {}
    for v in r.value:
        rby_number.setdefault(v.number, v)
    for v in e.value:
        vpath = f"{path} value {v.name}"
        rv = rby_name.get(v.name)
        if rv is None:
            other = rby_number.get(v.number)
            hint = f" (number {v.number} is '{other.name}' there)" if other else ""
            bad.append(f"{vpath}: no such value in the Envoy API{hint}")
            continue
        if v.number != rv.number:
            bad.append(f"{vpath}: number {v.number} here, {rv.number} in Envoy")
        if _deprecated(rv.options):
            notes.append(f"{vpath}: deprecated in the Envoy API")


def _compare_service(full, s, ref, where, bad):
    path = f"{where}: service {full}"
    if full not in ref.services:
        bad.append(f"{path}: no such service in the Envoy API")
        return
    r = {x.name: x for x in ref.services[full][0].method}
    for m in s.method:
        mpath = f"{path} method {m.name}"
        rm = r.get(m.name)
        if rm is None:
            bad.append(f"{mpath}: no such method in the Envoy API")
            continue
        for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
            a, b = getattr(m, attr), getattr(rm, attr)
            if a != b:
                bad.append(f"{mpath}: {attr} {a} here, {b} in Envoy")


# ---- producing the descriptor sets --------------------------------------------------------

def _protoc():
    p = shutil.which("protoc")
    if p is None:
        raise SetupError("protoc not found: install Debian's protobuf-compiler (make deps)")
    return p


def _load(path):
    s = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        s.ParseFromString(f.read())
    return s


def fetch(cache):
    """Runs fetch_envoy_api.sh (instant when cached); returns the reference deps/ dir."""
    r = subprocess.run([FETCH, cache], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=150)
    if r.returncode != 0:
        raise SetupError(f"fetching the reference Envoy API failed (exit {r.returncode}):\n"
                         f"{r.stdout}")
    deps = os.path.join(cache, f"grpc-js-xds-{ref_version()}", "deps")
    if not os.path.isdir(os.path.join(deps, "envoy-api", "envoy")):
        raise SetupError(f"{deps}/envoy-api/envoy missing after the fetch")
    return deps


def our_protos(proto_dir):
    out = []
    for d, _, files in os.walk(proto_dir):
        for n in files:
            if n.endswith(".proto"):
                out.append(os.path.relpath(os.path.join(d, n), proto_dir))
    return sorted(out)


def build_ours(proto_dir, out):
    files = our_protos(proto_dir)
    if not files:
        raise SetupError(f"no .proto files under {proto_dir}")
    r = subprocess.run([_protoc(), "--include_imports", f"--descriptor_set_out={out}",
                        f"-I{proto_dir}", f"-I{WKT_DIR}"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SetupError(f"protoc failed on proto/:\n{r.stdout}")
    return files


def build_theirs(deps, our_files, out):
    """Every v3 file of the reference envoy-api, plus any of our file paths (google/rpc/...,
    xds/...) found under one of its roots.  Files that do not compile with what the package
    ships (a few tracers import opencensus/opentelemetry protos it lacks) are left out, and
    listed in the returned notes."""
    roots = [os.path.join(deps, d) for d in ("envoy-api", "xds", "googleapis",
                                             "protoc-gen-validate")]
    env_root = roots[0]
    files = set()
    for d, _, names in os.walk(os.path.join(env_root, "envoy")):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), env_root)
            if n.endswith(".proto") and "/v3/" in rel:
                files.add(rel)
    for f in our_files:
        if any(os.path.isfile(os.path.join(r, f)) for r in roots):
            files.add(f)
    dropped = []
    args = [_protoc(), "--include_imports", f"--descriptor_set_out={out}"]
    args += [f"-I{r}" for r in roots] + [f"-I{WKT_DIR}"]
    for _ in range(20):
        r = subprocess.run(args + sorted(files), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode == 0:
            notes = [f"reference file left out (does not compile from the package): {d}"
                     for d in sorted(dropped)]
            return notes
        bad = set()
        for line in r.stdout.splitlines():
            name = line.split(":", 1)[0]
            if name in files:
                bad.add(name)
        if not bad:
            raise SetupError(f"protoc failed on the reference API:\n{r.stdout[-4000:]}")
        files -= bad
        dropped += bad
    raise SetupError("protoc on the reference API: still failing after 20 rounds")


def run(cache=None, out_dir=None, proto_dir=None):
    """Fetch (cached) + protoc on both + compare.  Returns (mismatches, notes)."""
    cache = cache or os.path.join(ROOT, "build", "conformance")
    out_dir = out_dir or os.path.join(cache, "out")
    proto_dir = proto_dir or os.path.join(ROOT, "proto")
    os.makedirs(out_dir, exist_ok=True)
    deps = fetch(cache)
    ours_pb = os.path.join(out_dir, "ours.pb")
    theirs_pb = os.path.join(out_dir, "envoy.pb")
    files = build_ours(proto_dir, ours_pb)
    notes = build_theirs(deps, files, theirs_pb)
    bad, more = compare_sets(_load(ours_pb), _load(theirs_pb), files)
    return bad, notes + more


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ours", nargs="?", help="our descriptor set (with --include_imports)")
    ap.add_argument("theirs", nargs="?", help="the reference descriptor set")
    ap.add_argument("--files", nargs="*", help="with OURS THEIRS: our files to check")
    ap.add_argument("--cache", help="reference cache dir (default build/conformance)")
    ap.add_argument("-q", action="store_true", help="do not print informational notes")
    a = ap.parse_args()
    try:
        if a.ours:
            if not a.theirs or not a.files:
                ap.error("OURS needs THEIRS and --files")
            bad, notes = compare_sets(_load(a.ours), _load(a.theirs), a.files)
        else:
            bad, notes = run(cache=a.cache)
    except SetupError as e:
        print(f"conformance: setup error: {e}", file=sys.stderr)
        return 2
    if not a.q:
        for n in notes:
            print(f"INFO {n}")
    for b in bad:
        print(f"MISMATCH {b}")
    print(f"conformance (@grpc/grpc-js-xds@{ref_version()}): {len(bad)} mismatches, "
          f"{len(notes)} notes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
