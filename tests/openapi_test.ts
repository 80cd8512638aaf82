// docs/openapi.json: generated from the zod schemas (deno task openapi), checked in, and kept in step with them
// and with API.md. Needs no stack.
import assert from "node:assert/strict";
import SwaggerParser from "@apidevtools/swagger-parser";
import { OPENAPI_PATH, openApiDocument } from "../scripts/openapi.ts";

// docs/API.md: the team's contract (../shared/API.md beside the project), copied into the repository so
// that a clone alone can check against it.
const API_MD = new URL("../docs/API.md", import.meta.url);
type Doc = { paths: Record<string, Record<string, unknown>> };

Deno.test("docs/openapi.json is what deno task openapi generates from the schemas now", async () => {
  const checkedIn = JSON.parse(await Deno.readTextFile(OPENAPI_PATH));
  assert.deepEqual(checkedIn, openApiDocument(), "docs/openapi.json is stale: run `deno task openapi`");
});

Deno.test("the document is valid OpenAPI 3.1, every $ref resolving", async () => {
  const api = await SwaggerParser.validate(structuredClone(openApiDocument()) as never);
  assert.equal((api as { openapi?: string }).openapi, "3.1.0");
  // and the validator does refuse a broken one
  const broken = structuredClone(openApiDocument()) as Doc;
  (broken.paths["/cancel"].post as { responses: unknown }).responses = {
    200: { $ref: "#/components/responses/Nope" },
  };
  await assert.rejects(SwaggerParser.validate(broken as never));
});

Deno.test("every endpoint API.md names is in the document, with its verb", async () => {
  const apiMd = await Deno.readTextFile(API_MD);
  const endpoints = apiMd.slice(apiMd.indexOf("## Endpoints"), apiMd.indexOf("## Render endpoints"));
  const named = [...endpoints.matchAll(/`(GET|POST) (\/[^`?\s]*)[^`]*`/g)].map(([, verb, path]) => ({
    verb,
    path,
  }));
  // the headings of "Endpoints" and the render callback's path
  assert.ok(named.length >= 10, `found only ${named.length} endpoints in API.md`);
  const { paths } = openApiDocument() as Doc;
  for (const { verb, path } of named) {
    assert.ok(
      paths[path]?.[verb.toLowerCase()],
      `${verb} ${path} (API.md) is missing from the OpenAPI document`,
    );
  }
  assert.deepEqual(
    Object.keys(paths).sort(),
    [...new Set(named.map((e) => e.path))].sort(),
    "the document describes no path API.md lacks",
  );
});

Deno.test("each error answer is the contract's error shape with its code; 429 and 503 say Retry-After", () => {
  const doc = openApiDocument() as Doc & {
    components: { responses: Record<string, Record<string, unknown>> };
  };
  for (const [path, verbs] of Object.entries(doc.paths)) {
    for (const [verb, op] of Object.entries(verbs)) {
      const responses = (op as { responses: Record<string, { $ref?: string }> }).responses;
      for (const [status, response] of Object.entries(responses).filter(([s]) => Number(s) >= 400)) {
        const name = response.$ref?.split("/").pop();
        const resolved = name ? doc.components.responses[name] : undefined;
        assert.ok(resolved, `${verb} ${path} ${status} is not one of the error responses`);
        assert.ok(
          String(resolved.description).startsWith(`${status} `),
          `${verb} ${path} ${status} → ${name}`,
        );
        assert.equal(status === "429" || status === "503", "headers" in resolved, `${status} Retry-After`);
      }
    }
  }
});
