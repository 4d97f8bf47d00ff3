// Send an image to /chat the way a web page does with the official client: as a Blob,
// which the client uploads under the name "blob", with no extension and no type.
import { readFileSync } from "node:fs";
import { Client } from "@gradio/client";

const [url, path, text] = process.argv.slice(2);
const client = await Client.connect(url);
const blob = new Blob([readFileSync(path)]);
try {
  const result = await client.predict("/chat", {
    message: { text, files: [blob] },
    history: [],
    max_new_tokens: 4,
  });
  console.log(JSON.stringify({ ok: true, data: result.data }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && (e.message || e)) }));
}
process.exit(0);
