// Validate AsyncAPI documents with the official parser (@asyncapi/parser) and its Avro schema
// parser, installed by scripts/install-tools.sh; run by tests/deploy/test_asyncapi_valid.py:
//   NODE_PATH=<tools>/asyncapi/node_modules node asyncapi_validate.cjs FILE...
// Prints one JSON line per file: {"file", "valid", "errors": [...], "warnings": n,
// "channels": [...], "messages": [...], "parser": "<version>"}; exit 1 if any file is invalid.
'use strict';
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
const { AvroSchemaParser } = require('@asyncapi/avro-schema-parser');
const parserVersion = require('@asyncapi/parser/package.json').version;

async function main(files) {
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  let failed = false;
  for (const file of files) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(file, 'utf8'), {
      source: file,
    });
    // DiagnosticSeverity: 0 error, 1 warning, 2 information, 3 hint.
    const errors = diagnostics
      .filter((d) => d.severity === 0)
      .map((d) => `${d.code}: ${d.message} at /${(d.path || []).join('/')}`);
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
