// Rebuilds data/istio-<version>-crd-schemas.json from the npm package
// @kubernetes-models/istio (see the crate's README, "How to update them").
//
//   mkdir -p /tmp/istio-models && cd /tmp/istio-models
//   npm install @kubernetes-models/istio@3.0.1 typescript@5
//   node <repo>/crates/kube-emulator/data/extract-istio-schemas.mjs \
//       /tmp/istio-models/node_modules/@kubernetes-models/istio > istio-<version>-crd-schemas.json
//
// The package does not ship the CRDs' schemas as data: it ships, for each kind, TypeScript
// declarations (`<group>/<version>/<Kind>.d.ts`, generated from the CRD's openAPIV3Schema,
// descriptions included) and a validator compiled from that schema by Ajv
// (`_schemas/<Group><Version><Kind>.js`). This script rebuilds a structural schema from
// both: the tree of fields, their descriptions, string enums and maps from the declarations,
// and, for every numeric field, the JSON type (`integer` or `number`) and the `minimum` /
// `maximum` the validator checks. What neither keeps faithfully is left out (see README).

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const withDescriptions = !args.includes("--no-descriptions");
const pkgDir = resolve(
  args.find((a) => !a.startsWith("--")) ?? "/tmp/istio-models/node_modules/@kubernetes-models/istio",
);
const require = createRequire(join(pkgDir, "package.json"));
const ts = require("typescript");

const GROUP = "networking.istio.io";
const KINDS = ["VirtualService", "DestinationRule"];
const VERSIONS = ["v1", "v1beta1"];

const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
const source = (pkg["crd-generate"]?.input ?? []).find((u) => u.includes("crd-all"));
if (!source) throw new Error("package.json names no crd-all input: cannot tell the Istio version");
const istioVersion = source.match(/istio\/istio\/([^/]+)\//)?.[1];

// ------------------------------------------------------------------------------------------
// The tree of fields, from the declarations.

function declaredSchema(file, iface) {
  const program = ts.createProgram([file], { strict: true, noEmit: true });
  const checker = program.getTypeChecker();
  const sf = program.getSourceFile(file);
  let root;
  ts.forEachChild(sf, (n) => {
    if (ts.isInterfaceDeclaration(n) && n.name.text === iface) root = checker.getTypeAtLocation(n);
  });
  if (!root) throw new Error(`${iface} not found in ${file}`);

  const describe = (sym, s) => {
    if (!withDescriptions) return s;
    const d = ts.displayPartsToString(sym.getDocumentationComment(checker)).trim();
    return d ? { description: d, ...s } : s;
  };

  // The same field of a oneOf's members shows as an intersection of its copies.
  const arrayOf = (t) => {
    if (checker.isArrayType(t)) return checker.getTypeArguments(t)[0];
    if (t.isIntersection() && t.types.every((c) => checker.isArrayType(c))) {
      return checker.getTypeArguments(t.types[0])[0];
    }
    return undefined;
  };

  const walk = (type, where) => {
    let members = type.isUnion() ? type.types : [type];
    members = members.filter((t) => !(t.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Null)));
    const every = (flag) => members.length > 0 && members.every((t) => t.flags & flag);
    if (every(ts.TypeFlags.StringLiteral)) {
      return { type: "string", enum: members.map((t) => t.value) };
    }
    if (every(ts.TypeFlags.BooleanLike)) return { type: "boolean" };
    if (every(ts.TypeFlags.StringLike)) return { type: "string" };
    if (every(ts.TypeFlags.NumberLike)) return { type: "number" }; // refined by the validator
    if (every(ts.TypeFlags.NumberLike | ts.TypeFlags.StringLike)) {
      return { "x-kubernetes-int-or-string": true };
    }
    if (members.every((t) => arrayOf(t))) {
      return { type: "array", items: walk(arrayOf(members[0]), `${where}[]`) };
    }
    if (members.some((t) => t.flags & ts.TypeFlags.Any || t.flags & ts.TypeFlags.Unknown)) {
      return { "x-kubernetes-preserve-unknown-fields": true };
    }
    if (members.every((t) => t.flags & ts.TypeFlags.Object || t.isIntersection())) {
      // A oneOf of the CRD shows as a union of the same object with different required
      // fields: the fields are the union of the members' fields.
      // A field is required when no member has it optional (a field required by one
      // branch of a oneOf only is optional in the others).
      const props = new Map();
      const optional = new Set();
      let index;
      for (const t of members) {
        const own = checker.getPropertiesOfType(t);
        for (const p of own) {
          if (!props.has(p.name)) props.set(p.name, p);
          if (p.flags & ts.SymbolFlags.Optional) optional.add(p.name);
        }
        for (const name of props.keys()) {
          if (!own.some((p) => p.name === name)) optional.add(name);
        }
        const info = checker.getIndexInfosOfType(t).find((i) => i.keyType.flags & ts.TypeFlags.String);
        if (info) index = info.type;
      }
      const out = { type: "object" };
      if (props.size > 0) {
        out.properties = {};
        for (const name of [...props.keys()].sort()) {
          const sym = props.get(name);
          const pt = checker.getTypeOfSymbol(sym);
          out.properties[name] = describe(sym, walk(pt, `${where}.${name}`));
        }
      }
      const required = [...props.keys()].filter((n) => !optional.has(n)).sort();
      if (required.length > 0) out.required = required;
      if (index) out.additionalProperties = walk(index, `${where}.*`);
      return out;
    }
    throw new Error(`${where}: a type this script does not know: ${checker.typeToString(type)}`);
  };
  return walk(root, iface);
}

// ------------------------------------------------------------------------------------------
// The numeric fields' types and bounds, from the compiled validator.

// An object that has `value` at the end of `path` (a list of property names, `[]` for an
// item of a list, `*` for a value of a map), and the JSON pointer of that place.
function placed(path, value) {
  const pointer = [];
  const build = (i) => {
    if (i === path.length) return value;
    const seg = path[i];
    if (seg === "[]") {
      pointer.push("0");
      return [build(i + 1)];
    }
    const key = seg === "*" ? "k" : seg;
    pointer.push(key);
    return { [key]: build(i + 1) };
  };
  const obj = build(0);
  return { obj, pointer: "/" + pointer.join("/") };
}

function refineNumbers(schema, validate, base) {
  const errorsAt = (path, value) => {
    const { obj, pointer } = placed(path, value);
    validate({ ...base, ...obj });
    return (validate.errors ?? []).filter((e) => e.instancePath === pointer);
  };
  const visit = (s, path) => {
    if (s.type === "number") {
      const typeErr = errorsAt(path, 0.5).find((e) => e.keyword === "type");
      if (typeErr?.params?.type === "integer") s.type = "integer";
      const min = errorsAt(path, -1e15).find((e) => e.keyword === "minimum");
      if (min) s.minimum = min.params.limit;
      const large = errorsAt(path, 1e15);
      const max = large.find((e) => e.keyword === "maximum");
      if (max) s.maximum = max.params.limit;
      const format = large.find((e) => e.keyword === "format");
      if (format) s.format = format.params.format;
    }
    for (const [k, sub] of Object.entries(s.properties ?? {})) visit(sub, [...path, k]);
    if (s.items) visit(s.items, [...path, "[]"]);
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      visit(s.additionalProperties, [...path, "*"]);
    }
  };
  visit(schema, []);
}

// ------------------------------------------------------------------------------------------

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    const order = ["description", "type"];
    const keys = Object.keys(v).sort((a, b) => {
      const ia = order.indexOf(a), ib = order.indexOf(b);
      if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
      return a < b ? -1 : a > b ? 1 : 0;
    });
    return Object.fromEntries(keys.map((k) => [k, sortKeys(v[k])]));
  }
  return v;
}

async function kindSchema(kind, version) {
  const file = join(pkgDir, GROUP, version, `${kind}.d.ts`);
  const declared = declaredSchema(file, `I${kind}`);
  const props = declared.properties ?? {};
  // The root as in a CRD: apiVersion, kind and metadata are the API server's.
  const schema = {
    type: "object",
    properties: {
      apiVersion: { type: "string" },
      kind: { type: "string" },
      metadata: { type: "object" },
    },
  };
  if (props.spec) schema.properties.spec = props.spec;
  if (props.status) {
    // Istio's CRDs keep every field of a status (x-kubernetes-preserve-unknown-fields on
    // the status object); the declarations only show the fields Istio itself writes.
    schema.properties.status = { ...props.status, "x-kubernetes-preserve-unknown-fields": true };
  }
  const version_ = version[0].toUpperCase() + version.slice(1);
  const validatorFile = join(pkgDir, "_schemas", `NetworkingIstioIo${version_}${kind}.js`);
  const { validate } = await import(pathToFileURL(validatorFile).href);
  const base = { apiVersion: `${GROUP}/${version}`, kind, metadata: { name: "x" } };
  refineNumbers(schema, validate, base);
  return sortKeys(schema);
}

const out = {};
for (const kind of KINDS) {
  const schemas = [];
  for (const version of VERSIONS) schemas.push(await kindSchema(kind, version));
  const text = schemas.map((s) => JSON.stringify(s));
  if (!text.every((t) => t === text[0])) {
    throw new Error(`${kind}: the versions' schemas differ; the emulator keeps one per kind`);
  }
  out[kind] = { served: VERSIONS, schema: schemas[0] };
}
process.stderr.write(`Istio ${istioVersion} (from ${pkg.name} ${pkg.version})\n`);
process.stdout.write(JSON.stringify(out) + "\n");
