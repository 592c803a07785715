/**
 * TLS, mutual TLS and the bearer token of the gRPC servers and clients, from files named in the
 * environment (on a cluster, Secrets mounted as files). Nothing set: plaintext, as on one machine.
 *
 *   TRANSFERLAB_TLS_CERT_FILE, TRANSFERLAB_TLS_KEY_FILE  this process's certificate chain and key
 *       (PEM): a server then serves TLS only; a client presents them when it calls a server that
 *       asks for a client certificate (mutual TLS).
 *   TRANSFERLAB_TLS_CLIENT_CA_FILE  a server requires a client certificate signed by this CA.
 *   TRANSFERLAB_TLS_CA_FILE         a client speaks TLS and trusts servers signed by this CA.
 *   TRANSFERLAB_TLS_SERVER_NAME     a client expects this name in the server's certificate instead
 *       of the host it dials (e.g. through `kubectl port-forward` to 127.0.0.1).
 *   TRANSFERLAB_HEALTH_PORT         with TLS: a second, plaintext port that serves grpc.health.v1
 *       only, for probes that cannot speak TLS (Kubernetes' gRPC probes).
 *   TRANSFERLAB_API_TOKEN or TRANSFERLAB_API_TOKEN_FILE  the bearer token of the sweep API: the
 *       controller requires it, the CLI sends it.
 *
 * Errors name the variable and the file, never the file's content.
 */
import { X509Certificate, createHash, createPrivateKey, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { portSchema } from '../config.ts';

type Env = NodeJS.ProcessEnv;

/** What startGrpcServer serves with: credentials, and a plaintext health-only port when set. */
export interface GrpcServerSecurity {
  credentials: grpc.ServerCredentials;
  tls: boolean;
  /** Client certificates are required (signed by TRANSFERLAB_TLS_CLIENT_CA_FILE). */
  mutualTls: boolean;
  healthPort?: number;
}

/** What a client dials with: credentials, and the channel options (a server name override). */
export interface GrpcClientSecurity {
  credentials: grpc.ChannelCredentials;
  options: grpc.ClientOptions;
  tls: boolean;
}

function readFile(variable: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new Error(`${variable}: cannot read ${path} (${code})`);
  }
}

/** A PEM certificate (chain or CA bundle); refused naming the file when it holds none. */
function readCertificate(variable: string, path: string): Buffer {
  const bytes = readFile(variable, path);
  try {
    new X509Certificate(bytes);
  } catch {
    throw new Error(`${variable}: ${path} does not hold a PEM certificate`);
  }
  return bytes;
}

function readPrivateKey(variable: string, path: string): Buffer {
  const bytes = readFile(variable, path);
  try {
    createPrivateKey(bytes);
  } catch {
    throw new Error(`${variable}: ${path} does not hold a PEM private key`);
  }
  return bytes;
}

const set = (env: Env, variable: string): string | undefined => {
  const value = env[variable];
  return value === undefined || value === '' ? undefined : value;
};

/** This process's own certificate and key, when both are named; one without the other is an error. */
function ownKeyPair(env: Env): { cert: Buffer; key: Buffer } | undefined {
  const certFile = set(env, 'TRANSFERLAB_TLS_CERT_FILE');
  const keyFile = set(env, 'TRANSFERLAB_TLS_KEY_FILE');
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) {
    throw new Error(
      `invalid configuration:\n  TRANSFERLAB_TLS_CERT_FILE and TRANSFERLAB_TLS_KEY_FILE: set both or neither`,
    );
  }
  return {
    cert: readCertificate('TRANSFERLAB_TLS_CERT_FILE', certFile),
    key: readPrivateKey('TRANSFERLAB_TLS_KEY_FILE', keyFile),
  };
}

/** A server's security from the environment, read once at start-up. */
export function serverSecurityFromEnv(env: Env = process.env): GrpcServerSecurity {
  const own = ownKeyPair(env);
  const clientCaFile = set(env, 'TRANSFERLAB_TLS_CLIENT_CA_FILE');
  const healthText = set(env, 'TRANSFERLAB_HEALTH_PORT');
  const healthPort = healthText === undefined ? undefined : portSchema.safeParse(healthText);
  if (healthPort && !healthPort.success) {
    throw new Error(`invalid configuration:\n  TRANSFERLAB_HEALTH_PORT: must be a port number, got '${healthText}'`);
  }
  if (!own) {
    if (clientCaFile) {
      throw new Error(
        'invalid configuration:\n  TRANSFERLAB_TLS_CLIENT_CA_FILE: needs TRANSFERLAB_TLS_CERT_FILE and TRANSFERLAB_TLS_KEY_FILE (mutual TLS is TLS)',
      );
    }
    return { credentials: grpc.ServerCredentials.createInsecure(), tls: false, mutualTls: false };
  }
  const clientCa = clientCaFile ? readCertificate('TRANSFERLAB_TLS_CLIENT_CA_FILE', clientCaFile) : null;
  return {
    credentials: grpc.ServerCredentials.createSsl(
      clientCa,
      [{ cert_chain: own.cert, private_key: own.key }],
      !!clientCa,
    ),
    tls: true,
    mutualTls: !!clientCa,
    ...(healthPort?.success ? { healthPort: healthPort.data } : {}),
  };
}

/**
 * A client's security from the environment: TLS when TRANSFERLAB_TLS_CA_FILE is set (presenting
 * this process's certificate when it has one), else plaintext.
 */
export function clientSecurityFromEnv(env: Env = process.env): GrpcClientSecurity {
  const caFile = set(env, 'TRANSFERLAB_TLS_CA_FILE');
  if (!caFile) return { credentials: grpc.credentials.createInsecure(), options: {}, tls: false };
  const ca = readCertificate('TRANSFERLAB_TLS_CA_FILE', caFile);
  const own = ownKeyPair(env);
  const serverName = set(env, 'TRANSFERLAB_TLS_SERVER_NAME');
  return {
    credentials: grpc.credentials.createSsl(ca, own?.key ?? null, own?.cert ?? null),
    options: serverName ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } : {},
    tls: true,
  };
}

/** The sweep API's bearer token: TRANSFERLAB_API_TOKEN, or the first line of TRANSFERLAB_API_TOKEN_FILE. */
export function apiTokenFromEnv(env: Env = process.env): string | undefined {
  const value = set(env, 'TRANSFERLAB_API_TOKEN');
  const file = set(env, 'TRANSFERLAB_API_TOKEN_FILE');
  if (value && file) {
    throw new Error(
      'invalid configuration:\n  TRANSFERLAB_API_TOKEN and TRANSFERLAB_API_TOKEN_FILE: set one, not both',
    );
  }
  if (!file) return value?.trim() || undefined;
  const token = readFile('TRANSFERLAB_API_TOKEN_FILE', file).toString('utf8').trim();
  if (token === '' || /\s/.test(token)) {
    throw new Error(
      `invalid configuration:\n  TRANSFERLAB_API_TOKEN_FILE: ${file} must hold one token, without spaces`,
    );
  }
  return token;
}

/** The metadata key and scheme of the token (RFC 6750 style). */
export const AUTHORIZATION_HEADER = 'authorization';

/** Metadata carrying `token` as `authorization: Bearer <token>`, added to `metadata` when given. */
export function bearerMetadata(token: string | undefined, metadata = new grpc.Metadata()): grpc.Metadata {
  if (token) metadata.set(AUTHORIZATION_HEADER, `Bearer ${token}`);
  return metadata;
}

const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/**
 * Checks a call's bearer token against the expected one: undefined when it matches, else why not
 * (never the token). Compared as SHA-256 digests with timingSafeEqual, so neither the content nor
 * the length of the expected token shows in the time taken.
 */
export function bearerTokenProblem(metadata: grpc.Metadata, expected: string): string | undefined {
  const values = metadata.get(AUTHORIZATION_HEADER);
  if (values.length === 0) return 'no bearer token: send the metadata "authorization: Bearer <token>"';
  if (values.length > 1) return 'more than one authorization header';
  const match = /^Bearer +(\S+) *$/i.exec(String(values[0]));
  if (!match) return 'the authorization header is not "Bearer <token>"';
  return timingSafeEqual(digest(match[1]!), digest(expected)) ? undefined : 'the bearer token is not the right one';
}
