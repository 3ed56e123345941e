// The contract's rules for names, rooms and messages, checked before anything is sent.

import { MAX_MESSAGE_CHARS, MAX_USERNAME_CHARS } from "./state.js";

export const ROOM_RE = /^[a-z0-9_-]{1,64}$/;
// Rust's `char::is_alphanumeric` is Unicode Alphabetic or Numeric; Alphabetic takes in the
// combining vowel signs of Indic scripts, which `\p{L}` would refuse.
const NAME_CHAR_RE = /^[\p{Alphabetic}\p{N}_.-]$/u;

/** The length the server counts: Unicode scalar values, not UTF-16 units. */
export function charCount(text) {
  return [...text].length;
}

export function validUsername(name) {
  const chars = [...name];
  return chars.length >= 1 && chars.length <= MAX_USERNAME_CHARS && chars.every((c) => NAME_CHAR_RE.test(c));
}

export function contentProblem(text) {
  const count = charCount(text);
  if (count === 0) return "Write something first.";
  if (count > MAX_MESSAGE_CHARS) {
    return `Messages are at most ${MAX_MESSAGE_CHARS} characters (this one has ${count}).`;
  }
  if (/^\s+$/u.test(text)) return "A message cannot be only spaces.";
  if (/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u.test(text)) return "The message contains a control character.";
  return null;
}

export function newClientId() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `w-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}
