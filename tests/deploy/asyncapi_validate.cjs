// Validate AsyncAPI documents with the official parser (@asyncapi/parser) and its Avro schema
// parser, installed by scripts/install-tools.sh; run by tests/deploy/test_asyncapi_valid.py:
//   NODE_PATH=<tools>/asyncapi/node_modules node asyncapi_validate.cjs FILE...
// The parser validates a v3 document against the AsyncAPI specification's JSON Schema (which
// checks an Avro payload's structure only), so every Avro schema in the file is also checked
// with the Avro schema parser's own validate() (avsc: unknown types, bad defaults, duplicates).
// Prints one JSON line per file: {"file", "valid", "errors": [...], "warnings": n,
// "channels": [...], "messages": [...], "parser": "<version>"}; exit 1 if any file is invalid.
'use strict';
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
const { AvroSchemaParser } = require('@asyncapi/avro-schema-parser');
const yaml = require('js-yaml'); // the parser's own YAML reader (a dependency of it)
const parserVersion = require('@asyncapi/parser/package.json').version;

const avro = AvroSchemaParser();
const AVRO_FORMATS = new Set(avro.getMimeTypes());

// Every {schemaFormat: <Avro>, schema} object in the raw document, with its path.
function avroSchemas(node, path, out) {
  if (Array.isArray(node)) {
    node.forEach((v, i) => avroSchemas(v, [...path, String(i)], out));
  } else if (node !== null && typeof node === 'object') {
    if (typeof node.schemaFormat === 'string' && AVRO_FORMATS.has(node.schemaFormat)) {
      out.push({ data: node.schema, path: [...path, 'schema'] });
      return out;
    }
    for (const [k, v] of Object.entries(node)) avroSchemas(v, [...path, k], out);
  }
  return out;
}

async function main(files) {
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  let failed = false;
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    const { document, diagnostics } = await parser.parse(text, { source: file });
    // DiagnosticSeverity: 0 error, 1 warning, 2 information, 3 hint.
    const errors = diagnostics
      .filter((d) => d.severity === 0)
      .map((d) => `${d.code}: ${d.message} at /${(d.path || []).join('/')}`);
    const avroChecked = [];
    for (const input of avroSchemas(yaml.load(text), [], [])) {
      avroChecked.push('/' + input.path.join('/'));
      for (const d of await avro.validate(input)) {
        errors.push(`avro-schema: ${d.message} at /${input.path.join('/')}`);
      }
    }
    const valid = document !== undefined && errors.length === 0;
    failed = failed || !valid;
    const report = {
      file,
      valid,
      errors,
      warnings: diagnostics
        .filter((d) => d.severity === 1)
        .map((d) => `${d.code}: ${d.message} at /${(d.path || []).join('/')}`),
      parser: parserVersion,
      avroSchemasChecked: avroChecked,
    };
    if (document !== undefined) {
      report.channels = document.channels().all().map((c) => c.address()).sort();
      report.messages = document.allMessages().all().map((m) => m.name()).sort();
      report.operations = document.operations().all().map((o) => o.id()).sort();
      report.schemaFormats = [
        ...new Set(document.allMessages().all().map((m) => m.schemaFormat())),
      ].sort();
    }
    process.stdout.write(JSON.stringify(report) + '\n');
  }
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`asyncapi_validate: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
