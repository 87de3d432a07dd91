// A real OpenID Connect provider on loopback for the sign-on tests (oidc-provider).
//
// People live in ACCOUNTS_FILE ({"carol": {"password": "...", "claims": {...}}}), read again at
// every look-up, so a test changes someone's groups or removes them by rewriting the file.
// Logging in and consenting go through plain HTML forms, as a browser would see them.
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

import Provider, { interactionPolicy } from "oidc-provider";

const { PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ACCOUNTS_FILE } = process.env;

function accounts() {
  return JSON.parse(readFileSync(ACCOUNTS_FILE, "utf8"));
}

function signingKey() {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), kid: "test-signing-key", alg: "RS256", use: "sig" };
}

function isActive(accountId) {
  const account = accounts()[accountId];
  return Boolean(account) && !account.disabled;
}

// Someone disabled since they signed in must sign in again, which they cannot: a silent
// (prompt=none) request then ends in login_required, as with a real provider.
const policy = interactionPolicy.base();
policy.get("login").checks.push(
  new interactionPolicy.Check("account_disabled", "The account is disabled", "login_required", (ctx) => {
    const { accountId } = ctx.oidc.session;
    return accountId !== undefined && !isActive(accountId);
  }),
);

const provider = new Provider(ISSUER, {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  scopes: ["openid", "email", "profile", "groups"],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["preferred_username", "name", "given_name", "family_name"],
    groups: ["groups"],
  },
  async findAccount(ctx, sub) {
    if (!isActive(sub)) {
      return undefined;
    }
    return { accountId: sub, claims: async () => ({ sub, ...accounts()[sub].claims }) };
  },
  jwks: { keys: [signingKey()] },
  cookies: { keys: ["test-only-cookie-key"] },
  features: { devInteractions: { enabled: false } },
  interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
});

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, body) {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8" });
  res.end(`<!doctype html><html><body>${body}</body></html>`);
}

function loginForm(uid, error) {
  return (
    `<h1>Sign in to the test provider</h1>${error ? `<p class="error">${escape(error)}</p>` : ""}` +
    `<form method="post" action="/interaction/${uid}/login">` +
    `<input name="login" autocomplete="username"><input name="password" type="password">` +
    `<button type="submit">Sign in</button></form>`
  );
}

function consentForm(uid, clientId) {
  return (
    `<h1>Allow ${escape(clientId)} to see who you are?</h1>` +
    `<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Allow</button></form>`
  );
}

async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    return page(res, 400, "<p>Unknown interaction</p>");
  }
  if (req.method === "GET") {
    return details.prompt.name === "login"
      ? page(res, 200, loginForm(uid, ""))
      : page(res, 200, consentForm(uid, details.params.client_id));
  }
  if (action === "login") {
    const form = await formBody(req);
    const login = form.get("login");
    if (!isActive(login) || accounts()[login].password !== form.get("password")) {
      return page(res, 200, loginForm(uid, "Wrong user name or password."));
    }
    return provider.interactionFinished(
      req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false },
    );
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) {
    grant.addOIDCScope(missing.missingOIDCScope.join(" "));
  }
  if (missing.missingOIDCClaims) {
    grant.addOIDCClaims(missing.missingOIDCClaims);
  }
  return provider.interactionFinished(
    req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true },
  );
}

// What went wrong goes to the log the tests show when the provider misbehaves.
for (const event of ["server_error", "authorization.error", "grant.error", "userinfo.error"]) {
  provider.on(event, (ctx, error) => console.error(event, error));
}

const providerHandler = provider.callback();
const INTERACTION = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/;

createServer(async (req, res) => {
  const match = INTERACTION.exec(new URL(req.url, ISSUER).pathname);
  if (!match) {
    return providerHandler(req, res);
  }
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (error) {
    page(res, 400, `<p>${escape(error.message)}</p>`);
  }
}).listen(Number(PORT), "127.0.0.1", () => {
  process.stdout.write(`listening on ${ISSUER}\n`);
});
