// discord.js v14 under gateway-harness: a Client pointed at the harness, logging dispatches.
//
// REST goes to `rest.api` (the harness base without the /v10 the library appends); the gateway
// URL comes from the harness's GET /gateway/bot (discord.js has no other knob) and resumes follow
// READY's resume_gateway_url. TLS trusts the harness CA through NODE_EXTRA_CA_CERTS.
// Everything else stays at its defaults (no zlib-sync installed, so no compression).
'use strict';
const { Client, Events, GatewayIntentBits, version } = require('discord.js');
const { REST_URL, TOKEN, emit, announce, DeliveryLog } = require('./_shim_common.js');

const log = new DeliveryLog();
const client = new Client({
  intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages],
  rest: { api: REST_URL.replace(/\/v10$/, '') },
});
client.on(Events.Raw, (packet) => log.payload(packet)); // every dispatch, in order, as received
client.on(Events.ClientReady, () => emit({ event: 'ready', session_id: log.sessionId }));
client.on(Events.ShardResume, () => emit({ event: 'resumed', session_id: log.sessionId }));
client.on(Events.Debug, (message) => process.stderr.write(`[debug] ${message}\n`));
client.on(Events.Error, (error) => process.stderr.write(`[error] ${error.stack || error}\n`));
process.on('SIGTERM', () => { client.destroy().finally(() => process.exit(0)); });

announce('discord.js', version);
client.login(TOKEN).catch((error) => {
  process.stderr.write(`login failed: ${error.stack || error}\n`);
  process.exit(1);
});
