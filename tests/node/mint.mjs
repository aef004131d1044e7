// Mints a token the way the Next.js app did (no iat, no typ, no jti):
//   new SignJWT({ userId, role }).setProtectedHeader({ alg: "HS256" }).setExpirationTime(t).sign(secret)
// Usage: JOSE_SECRET=<secret> node mint.mjs '<json claims {"userId":..,"role":..}>' <expiration>
//   <expiration>: a jose time span such as "15m" / "7d", or a number (Unix seconds).
// Optional claims (the session-lifetime tests): "iat" (Unix seconds) is set with setIssuedAt,
// "auth_time" goes into the payload as given. Without them the token is the Next.js app's.
// Either may be "now-<n>" / "now+<n>": n seconds from the moment of minting (one clock reading
// for both), so a test can read that moment back from the token.
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
const now = Math.floor(Date.now() / 1000);
const at = (v) => {
  const m = typeof v === "string" ? /^now([+-]\d+)$/.exec(v) : null;
  return m ? now + Number(m[1]) : v;
};
const claims = JSON.parse(claimsJson);
const { userId, role } = claims;
const iat = at(claims.iat);
const auth_time = at(claims.auth_time);
const exp = /^-?\d+$/.test(expArg) ? Number(expArg) : expArg;
const payload = role === undefined ? { userId } : { userId, role };
if (auth_time !== undefined) payload.auth_time = auth_time;
let jwt = new SignJWT(payload).setProtectedHeader({ alg: "HS256" });
if (iat !== undefined) jwt = jwt.setIssuedAt(iat);
const token = await jwt.setExpirationTime(exp).sign(new TextEncoder().encode(secret));
process.stdout.write(token + "\n");
