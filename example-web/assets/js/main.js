// fusion-host's pages: live status, pairing, approvals and the tool runner.
// Each part starts only where its page has it.

import { startLive } from './live.js';
import { startPairing } from './pairing.js';
import { startProposals } from './proposals.js';
import { startRunner } from './runner.js';

startLive();
startPairing();
startProposals();
startRunner();
