// Verifies a token the way the Next.js app did: jwtVerify(token, secret) with jose defaults.
// Usage: JOSE_SECRET=<secret> node verify.mjs <token>
// Prints {"ok":true,"payload":..,"protectedHeader":..} and exits 0, or
// {"ok":false,"code":..,"message":..} and exits 1.
import { jwtVerify } from "jose";

const secret = process.env.JOSE_SECRET;
const token = process.argv[2];
if (!secret || token === undefined) {
  console.error("usage: JOSE_SECRET=<secret> node verify.mjs <token>");
  process.exit(2);
}
try {
  const { payload, protectedHeader } = await jwtVerify(token, new TextEncoder().encode(secret));
  process.stdout.write(JSON.stringify({ ok: true, payload, protectedHeader }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, code: e.code ?? null, message: String(e.message) }) + "\n");
  process.exit(1);
}
