// Mints a token the way the Next.js app did (no iat, no typ, no jti):
//   new SignJWT({ userId, role }).setProtectedHeader({ alg: "HS256" }).setExpirationTime(t).sign(secret)
// Usage: JOSE_SECRET=<secret> node mint.mjs '<json claims {"userId":..,"role":..}>' <expiration>
//   <expiration>: a jose time span such as "15m" / "7d", or a number (Unix seconds).
// Prints the token on stdout. The secret comes from the environment, never from argv.
import { SignJWT } from "jose";

const secret = process.env.JOSE_SECRET;
if (!secret) {
  console.error("JOSE_SECRET is not set");
  process.exit(2);
}
const [claimsJson, expArg] = process.argv.slice(2);
if (!claimsJson || !expArg) {
  console.error("usage: node mint.mjs '<claims json>' <expiration>");
  process.exit(2);
}
const { userId, role } = JSON.parse(claimsJson);
const exp = /^-?\d+$/.test(expArg) ? Number(expArg) : expArg;
const payload = role === undefined ? { userId } : { userId, role };
const token = await new SignJWT(payload)
  .setProtectedHeader({ alg: "HS256" })
  .setExpirationTime(exp)
  .sign(new TextEncoder().encode(secret));
process.stdout.write(token + "\n");
