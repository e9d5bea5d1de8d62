// Shared by the Node.js shims: read the harness's environment, write the delivery log.
// Standard library only; see harness/adapters/contract.py for the contract itself.
'use strict';
const fs = require('fs');

function contract(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`shim: ${name} is not set (run this shim under gateway-harness)\n`);
    process.exit(2);
  }
  return value;
}

const GATEWAY_URL = contract('GATEWAY_HARNESS_GATEWAY_URL');
const REST_URL = contract('GATEWAY_HARNESS_REST_URL'); // ends in /api/v10
const TOKEN = contract('GATEWAY_HARNESS_TOKEN');
contract('GATEWAY_HARNESS_CA_FILE'); // trusted through NODE_EXTRA_CA_CERTS, set by the harness

// One JSON object on stdout: a client event the harness keeps with the run.
function emit(fields) {
  process.stdout.write(JSON.stringify(fields) + '\n');
}

function announce(lib, version) {
  emit({ lib, version, runtime: `node ${process.versions.node}` });
}

class DeliveryLog {
  constructor() {
    const path = process.env.GATEWAY_HARNESS_DELIVERY_LOG;
    this.fd = path ? fs.openSync(path, 'a') : null;
    this.sessionId = null;
  }

  dispatch(s, t) {
    const line = JSON.stringify({ s, t, session_id: this.sessionId, ts: Date.now() / 1000 }) + '\n';
    if (this.fd !== null) fs.writeSync(this.fd, line);
    else process.stdout.write(line);
  }

  // A decoded gateway payload (object); dispatches are logged, READY sets the session.
  payload(p) {
    if (!p || p.op !== 0) return;
    if (p.t === 'READY') this.sessionId = (p.d && p.d.session_id) || null;
    this.dispatch(p.s, p.t);
  }
}

module.exports = { GATEWAY_URL, REST_URL, TOKEN, emit, announce, DeliveryLog };
