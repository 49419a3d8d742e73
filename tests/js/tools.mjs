// The npm packages the test clients use live in tools/node_modules (scripts/bootstrap.sh
// --node), which ES module resolution does not search from tests/js; load them from there.

import { createRequire } from 'node:module';

export const toolsRequire = createRequire(new URL('../../tools/package.json', import.meta.url));
