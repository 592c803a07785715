// Small throwaway certificates for TLS tests, made by the openssl CLI into a folder: a CA, a
// certificate for the services (server and client use, for 127.0.0.1 and localhost), a client
// certificate of the same CA, and a second CA that signed nothing the servers trust.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCerts {
  caCert: string;
  /** The services' certificate (SANs 127.0.0.1 and localhost; serverAuth and clientAuth) and key. */
  serviceCert: string;
  serviceKey: string;
  /** A client's certificate from the same CA (clientAuth only) and key. */
  clientCert: string;
  clientKey: string;
  /** A CA the servers do not trust, and a client certificate it signed. */
  otherCaCert: string;
  otherClientCert: string;
  otherClientKey: string;
  /** Every private key file written, for a test that looks for them in logs. */
  keyFiles: string[];
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir }).catch((error: { stderr?: string; message: string }) => {
    throw new Error(`openssl ${args[0]} failed in ${dir}: ${error.stderr || error.message}`);
  });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

async function makeLeaf(dir: string, name: string, ca: string, extensions: string): Promise<void> {
  await writeFile(join(dir, `${name}.ext`), extensions);
  await openssl(dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-out',
    `${name}.crt`,
    '-extfile',
    `${name}.ext`,
  ]);
}

export async function makeTestCerts(dir: string): Promise<TestCerts> {
  await makeCa(dir, 'ca');
  await makeCa(dir, 'other-ca');
  await makeLeaf(
    dir,
    'service',
    'ca',
    'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n',
  );
  await makeLeaf(dir, 'client', 'ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  await makeLeaf(dir, 'other-client', 'other-ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n');
  const path = (file: string) => join(dir, file);
  return {
    caCert: path('ca.crt'),
    serviceCert: path('service.crt'),
    serviceKey: path('service.key'),
    clientCert: path('client.crt'),
    clientKey: path('client.key'),
    otherCaCert: path('other-ca.crt'),
    otherClientCert: path('other-client.crt'),
    otherClientKey: path('other-client.key'),
    keyFiles: ['ca.key', 'other-ca.key', 'service.key', 'client.key', 'other-client.key'].map(path),
  };
}

/** The base64 lines of a PEM file's body (no BEGIN/END lines): what a leak of the key would show. */
export async function pemBodyLines(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8'))
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('-----'));
}
