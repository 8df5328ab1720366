// The development inbox refreshes itself from its JSON twin every two seconds, and says when a message arrives.
// Rows are built with textContent: a message is shown as text, never parsed as HTML.
"use strict";

(function () {
  const main = document.getElementById("inbox");
  const body = document.getElementById("messages");
  const caption = document.querySelector("caption");
  const status = document.getElementById("inbox-status");
  const jsonUrl = main.dataset.jsonUrl;
  let newest = Number((body.querySelector("tr") || { dataset: { id: 0 } }).dataset.id) || 0;

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function render(messages) {
    const rows = messages.map((m) => {
      const row = document.createElement("tr");
      row.dataset.id = m.id;
      row.dataset.to = m.to;
      cell(row, m.ts);
      cell(row, m.channel + " (" + m.type + ")");
      cell(row, m.to);
      cell(row, m.msgid);
      const text = cell(row, "");
      text.className = "text";
      if (m.subject) {
        const strong = document.createElement("strong");
        strong.textContent = m.subject;
        text.append(strong, document.createElement("br"));
      }
      text.append(m.text);
      return row;
    });
    body.replaceChildren(...rows);
    caption.textContent = messages.length + (messages.length === 1 ? " message" : " messages") + ", newest first";
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = messages.length > 0;
  }

  async function refresh() {
    try {
      const response = await fetch(jsonUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) return;
      const messages = (await response.json()).result.messages;
      const latest = messages.length ? messages[0].id : 0;
      if (latest !== newest) {
        const arrived = messages.filter((m) => m.id > newest).length;
        render(messages);
        if (arrived > 0) status.textContent = arrived === 1 ? "1 new message." : arrived + " new messages.";
        newest = latest;
      }
    } catch (e) {
      // the service is restarting, say: try again at the next tick
    }
  }

  setInterval(refresh, 2000);
})();
