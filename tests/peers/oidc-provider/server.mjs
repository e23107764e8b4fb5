// oidc-provider (https://github.com/panva/node-oidc-provider) as a second, independent token
// server for certauth's tests: client_credentials with mutual-TLS client authentication and
// certificate-bound access tokens (RFC 8705) and DPoP-bound access tokens (RFC 9449), the
// tokens being JWTs for one resource so a test can verify them offline against its JWKS.
//
// Usage: node server.mjs CONFIG.json. tests/interop/_oidc_provider.py writes the configuration,
// starts this and reads the ready file; nothing else is meant to run it. The configuration:
//   port               0 for any free port
//   server_cert_file   PEM: the server certificate (it covers 127.0.0.1 and localhost)
//   server_key_file    PEM: its key
//   client_ca_files    PEM files of the CAs whose client certificates tls_client_auth trusts
//   clients            oidc-provider client metadata, as RFC 7591 names it (client_id,
//                      token_endpoint_auth_method, jwks, tls_client_auth_subject_dn, ...)
//   resource           the one resource indicator (RFC 8707) tokens are issued for
//   scope              the scopes (space-separated) that resource has
//   dpop_nonce         true: every DPoP proof needs a server nonce (RFC 9449 section 8);
//                      a list of client ids: only those clients' proofs do; false: none do
//   ready_file         written once listening: {"issuer", "port", "mtls_token_endpoint"}
// It exits on SIGTERM or SIGINT, and when its stdin closes (the test process went away).
// oidc-provider 9 supports Node.js 22 LTS and later; on Node 20 it runs (tested on 20.20) and
// prints an "Unsupported runtime" warning to the log.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
// RFC 8705 section 5: a client doing mutual TLS uses mtls_endpoint_aliases when the server
// publishes them. Here the alias is the same listener under the other name its certificate
// covers; the log names the URL each token was issued at, so a test sees which one was used.
const ALIAS_HOST = 'localhost';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function peerCertificate(ctx) {
  // Undefined when the client sent none: requestCert asks for one on every handshake, and
  // rejectUnauthorized is off so self-signed certificates reach oidc-provider, which judges
  // them against the client's registered JWKS (self_signed_tls_client_auth).
  return ctx.socket.getPeerX509Certificate?.() ?? undefined;
}

function rfc4514(x509) {
  // Node prints the subject one attribute per line, in certificate order; RFC 4514 writes them
  // last first, separated by commas. Plain values only: enough for the names tests make.
  return x509.subject.split('\n').reverse().join(',');
}

function requireNonce(ctx) {
  const { dpop_nonce: wanted } = config;
  if (Array.isArray(wanted)) {
    return wanted.includes(ctx.oidc.client?.clientId);
  }
  return wanted === true;
}

function resourceServer(resourceIndicator) {
  if (resourceIndicator !== config.resource) {
    throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
  }
  return {
    scope: config.scope,
    audience: config.resource,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

function signingKeys() {
  // A fresh key per run: tokens from an earlier run never verify against this one's JWKS.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' }] };
}

function providerFor(port) {
  const issuer = `https://${HOST}:${port}`;
  const mtlsTokenEndpoint = `https://${ALIAS_HOST}:${port}/token`;
  const provider = new Provider(issuer, {
    clients: config.clients.map((client) => ({
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      ...client,
    })),
    // The mutual-TLS methods are accepted only when listed here, besides features.mTLS.
    clientAuthMethods: ['self_signed_tls_client_auth', 'tls_client_auth', 'private_key_jwt'],
    jwks: signingKeys(),
    // Every algorithm certauth.dpop.DPoPKey signs with (oidc-provider's default is ES256 and
    // EdDSA only).
    enabledJWA: { dPoPSigningAlgValues: ['ES256', 'ES384', 'ES512', 'PS256', 'Ed25519', 'EdDSA'] },
    ttl: { ClientCredentials: 600 },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    // oidc-provider 9 has no setting of its own for the RFC 8705 section 5 metadata; its
    // discovery document takes extra members here.
    discovery: { mtls_endpoint_aliases: { token_endpoint: mtlsTokenEndpoint } },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // A request without `resource` (an Entra-style client sending only `scope`) gets a
        // token for the one resource too.
        defaultResource: async () => config.resource,
        getResourceServerInfo: async (ctx, resourceIndicator) => resourceServer(resourceIndicator),
      },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        selfSignedTlsClientAuth: true,
        tlsClientAuth: true,
        getCertificate: peerCertificate,
        // tls_client_auth: Node checked the chain against client_ca_files during the handshake.
        certificateAuthorized: (ctx) => ctx.socket.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => {
          if (property !== 'tls_client_auth_subject_dn') {
            throw new Error(`this test peer matches tls_client_auth_subject_dn only, not ${property}`);
          }
          const certificate = peerCertificate(ctx);
          return certificate !== undefined && rfc4514(certificate) === expected;
        },
      },
      dPoP: {
        enabled: true,
        nonceSecret: crypto.randomBytes(32),
        requireNonce,
      },
    },
  });
  // Why a request was refused, for the test's failure message (the response says only
  // "client authentication failed", as it should).
  provider.on('grant.error', (ctx, error) => {
    const detail = error.error_detail ? ` (${error.error_detail})` : '';
    console.error(`grant.error: ${error.error}: ${error.error_description}${detail}`);
  });
  provider.on('grant.success', (ctx) => {
    console.error(`grant.success: ${ctx.oidc.client.clientId} at ${ctx.href}`);
  });
  provider.on('server_error', (ctx, error) => console.error('server_error:', error));
  return { provider, issuer, mtlsTokenEndpoint };
}

const readFiles = (files) => files.map((file) => fs.readFileSync(file));

const server = https.createServer({
  cert: fs.readFileSync(config.server_cert_file),
  key: fs.readFileSync(config.server_key_file),
  // Without CAs Node would judge client certificates against its built-in public roots.
  ca: config.client_ca_files.length ? readFiles(config.client_ca_files) : undefined,
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: 'TLSv1.2',
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

server.listen(config.port, HOST, async () => {
  const { port } = server.address();
  const { provider, issuer, mtlsTokenEndpoint } = providerFor(port);
  // Load every client now, so a metadata mistake stops the start with oidc-provider's reason
  // instead of surfacing later as a bare invalid_client.
  try {
    for (const { client_id: clientId } of config.clients) {
      await provider.Client.find(clientId);
    }
  } catch (error) {
    console.error('a client in the configuration is invalid:', error);
    process.exit(1);
  }
  server.on('request', provider.callback());
  const ready = JSON.stringify({ issuer, port, mtls_token_endpoint: mtlsTokenEndpoint });
  // Written whole, then renamed: the reader never sees half a file.
  fs.writeFileSync(`${config.ready_file}.tmp`, ready);
  fs.renameSync(`${config.ready_file}.tmp`, config.ready_file);
});
