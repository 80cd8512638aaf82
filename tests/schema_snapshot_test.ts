// supabase/schema.sql is exactly the schema the migrations build: whoever changes a migration regenerates
// it with `deno task schema`, and a reviewer reads the change in one place.
import assert from "node:assert/strict";
import { dumpSchema, SCHEMA_FILE } from "../scripts/schema.ts";
import { env, test } from "./harness.ts";

test("supabase/schema.sql matches the migrated database (regenerate with `deno task schema`)", async () => {
  const expected = await Deno.readTextFile(SCHEMA_FILE);
  const actual = await dumpSchema(env.DB_URL);
  const diff = firstDifference(expected, actual);
  assert.ok(diff === undefined, `supabase/schema.sql is out of date at ${diff}; run \`deno task schema\``);
});

/** "line N: <file line> ≠ <database line>", or undefined when equal. */
function firstDifference(a: string, b: string): string | undefined {
  const x = a.split("\n"), y = b.split("\n");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] !== y[i]) return `line ${i + 1}: ${JSON.stringify(x[i])} ≠ ${JSON.stringify(y[i])}`;
  }
  return undefined;
}
