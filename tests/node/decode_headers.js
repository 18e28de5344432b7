// Decode RFC 2047 header values the way mail clients built on Nodemailer's libmime do.
// stdin: a JSON array of raw header values as they are on the wire, already unfolded
// (CRLF removed, the folding whitespace kept); stdout: a JSON array of the decoded texts.
"use strict";
const libmime = require("libmime");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const values = JSON.parse(input);
  process.stdout.write(JSON.stringify(values.map((v) => libmime.decodeWords(v))));
});
