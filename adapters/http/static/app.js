// banter web app, the entry module: wires the parts together and starts. Plain JavaScript ES
// modules, no build step; each module has one job (see the first line of each).

import { onSocket } from "./connection.js";
import { initDrawer } from "./drawer.js";
import { handle } from "./frames.js";
import { initHistoryPaging } from "./history.js";
import { initComposer } from "./outbox.js";
import { clearTyping, sendTypingFrom } from "./presence.js";
import { initReads } from "./reads.js";
import { initMembers } from "./members.js";
import { initLobby, roomEnded, start, switchRoom } from "./room.js";
import { initRooms } from "./rooms.js";
import { initSearch } from "./search.js";
import { $ } from "./state.js";

onSocket(handle, clearTyping, roomEnded);
initLobby();
// The composer first: its length cap must run before anything else reads what was typed.
initComposer();
sendTypingFrom($("input"));
initHistoryPaging();
initDrawer();
initReads();
initRooms(switchRoom);
initMembers(switchRoom);
initSearch(switchRoom);
start();
