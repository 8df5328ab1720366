// The try page: request a code, enter it, and say what each answer means, as a person would want it said.
// Plain JavaScript, no framework, no build step. The page keeps where it is (the address and the deadlines,
// never the code) in sessionStorage, so a reload comes back to the code box for the same address.
"use strict";

(function () {
  const main = document.getElementById("try");
  const config = {
    generateUrl: main.dataset.generateUrl,
    verifyUrl: main.dataset.verifyUrl,
    codeLength: Number(main.dataset.codeLength),
    ttl: Number(main.dataset.ttl),
    cooldown: Number(main.dataset.cooldown),
  };
  const $ = (id) => document.getElementById(id);
  const requestForm = $("request-form");
  const verifyForm = $("verify-form");
  const keyInput = $("key");
  const codeInput = $("code");
  const statusBox = $("status");
  const errorBox = $("error");
  const resendButton = $("resend");
  const STORAGE = "otp-service-try";

  // {type, key, expiresAt (ms or null), resendAt (ms), done (used, locked or expired)}
  let state = load();

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(STORAGE)) || null;
    } catch (e) {
      return null;
    }
  }

  function save() {
    if (state) sessionStorage.setItem(STORAGE, JSON.stringify(state));
    else sessionStorage.removeItem(STORAGE);
  }

  function say(text) {
    errorBox.textContent = "";
    statusBox.textContent = text;
  }

  function fail(text, field) {
    statusBox.textContent = "";
    errorBox.textContent = text;
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
      if (field.select) field.select();
    }
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
  }

  function chosenType() {
    return requestForm.querySelector("input[name=type]:checked").value;
  }

  function showType(type) {
    const email = type === "email";
    $("key-label").textContent = email ? "Email address" : "Phone number";
    keyInput.type = email ? "email" : "tel";
    keyInput.autocomplete = email ? "email" : "tel";
    $("key-hint").textContent = email
      ? "An email address, such as ada@example.com."
      : "A phone number, such as 9876543210 (without a country code, the service's default one is used).";
  }

  async function call(url, body) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ request: body }),
        credentials: "same-origin",
      });
    } catch (e) {
      return { status: 0, err: "NETWORK", errmsg: "The service did not answer. Is it running?", result: {} };
    }
    let envelope = {};
    try {
      envelope = await response.json();
    } catch (e) {
      envelope = {};
    }
    const params = envelope.params || {};
    return {
      status: response.status,
      err: params.err || "",
      errmsg: params.errmsg || "The service answered " + response.status + ".",
      result: envelope.result || {},
      retryAfter: Number(response.headers.get("Retry-After")) || 0,
    };
  }

  function showCodeStep() {
    requestForm.hidden = true;
    verifyForm.hidden = false;
    $("sent-to").textContent = "We sent a code to " + state.key + ". Read it in the development inbox.";
    tick();
  }

  function showRequestStep() {
    verifyForm.hidden = true;
    requestForm.hidden = false;
    codeInput.value = "";
  }

  async function send(type, key) {
    const now = Date.now();
    const answer = await call(config.generateUrl, { key: key, type: type });
    tick();
    const same = state && state.key === key && state.type === type;
    if (answer.status === 200) {
      // A resend of a live code keeps its expiry (the service does not reset it); anything else is a new code.
      const live = same && !state.done && state.expiresAt && state.expiresAt > now;
      state = {
        type: type,
        key: key,
        expiresAt: live ? state.expiresAt : now + config.ttl * 1000,
        resendAt: now + config.cooldown * 1000,
        done: false,
      };
      save();
      codeInput.removeAttribute("aria-invalid");
      codeInput.value = "";
      showCodeStep();
      say((live ? "Sent the same code again to " : "Code sent to ") + key + ". Enter it below.");
      codeInput.focus();
      return;
    }
    if (answer.status === 429 && answer.err === "ERROR_RATE_LIMIT_EXCEEDED") {
      const wait = answer.retryAfter || config.cooldown;
      if (!same) state = { type: type, key: key, expiresAt: null, done: false };
      state.resendAt = now + wait * 1000;
      save();
      showCodeStep();
      fail("A code was sent to " + key + " moments ago. Enter it, or ask for another in " +
           plural(wait, "second", "seconds") + ".");
      codeInput.focus();
      return;
    }
    const field = verifyForm.hidden ? keyInput : codeInput;
    fail(answer.errmsg, field);
  }

  async function verify(code) {
    const answer = await call(config.verifyUrl, { key: state.key, type: state.type, otp: code });
    tick(); // timers may have slept while the tab was in the background: show the time left as of now
    if (answer.status === 200) {
      state.done = true;
      save();
      codeInput.removeAttribute("aria-invalid");
      say("Verified: that was the right code. It is used now, so it will not verify again.");
      tick();
      return;
    }
    if (answer.err === "OTP_VERIFICATION_FAILED") {
      const left = Number(answer.result.remainingAttempt);
      if (left > 0) {
        fail("Wrong code, " + plural(left, "attempt", "attempts") + " left.", codeInput);
      } else {
        state.done = true;
        save();
        fail("Wrong code, and no attempts left: this code is locked. Request a new code.", codeInput);
      }
      return;
    }
    if (answer.err === "ERROR_INVALID_OTP") {
      state.done = true;
      save();
      fail("This code no longer works: it was used, it expired or it is locked. Request a new code.", codeInput);
      return;
    }
    if (answer.status === 429) {
      fail("Too many tries. Wait " + plural(answer.retryAfter || 1, "second", "seconds") + " and try again.",
           codeInput);
      return;
    }
    fail(answer.errmsg, codeInput);
  }

  let expiredSaid = false;

  function tick() {
    if (!state) return;
    const now = Date.now();
    const validity = $("validity");
    if (state.done) {
      validity.textContent = "";
    } else if (state.expiresAt) {
      const left = Math.ceil((state.expiresAt - now) / 1000);
      if (left > 0) {
        const minutes = Math.floor(left / 60);
        const seconds = String(left % 60).padStart(2, "0");
        validity.textContent = "The code is valid for another " + minutes + ":" + seconds + ".";
        expiredSaid = false;
      } else {
        validity.textContent = "The code has expired.";
        if (!expiredSaid) {
          expiredSaid = true;
          fail("The code has expired. Request a new code.");
        }
      }
    } else {
      validity.textContent = "";
    }
    const wait = Math.ceil(((state.resendAt || 0) - now) / 1000);
    if (wait > 0) {
      resendButton.disabled = true;
      resendButton.textContent = "Resend code (in " + wait + " s)";
    } else {
      resendButton.disabled = false;
      resendButton.textContent = state.done ? "Request a new code" : "Resend code";
    }
  }

  requestForm.addEventListener("change", (event) => {
    if (event.target.name === "type") showType(chosenType());
  });

  requestForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) {
      fail(chosenType() === "email" ? "Enter an email address." : "Enter a phone number.", keyInput);
      return;
    }
    keyInput.removeAttribute("aria-invalid");
    send(chosenType(), key);
  });

  verifyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = codeInput.value.trim();
    if (!new RegExp("^[0-9]{" + config.codeLength + "}$").test(code)) {
      fail("Enter the " + config.codeLength + "-digit code.", codeInput);
      return;
    }
    verify(code);
  });

  resendButton.addEventListener("click", () => send(state.type, state.key));

  $("restart").addEventListener("click", () => {
    state = null;
    save();
    say("");
    showRequestStep();
    keyInput.focus();
  });

  codeInput.addEventListener("input", () => {
    codeInput.value = codeInput.value.replace(/[^0-9]/g, "").slice(0, config.codeLength);
  });

  if (state && state.key) {
    requestForm.querySelector("input[name=type][value=" + (state.type === "phone" ? "phone" : "email") + "]")
      .checked = true;
    showType(state.type);
    keyInput.value = state.key;
    showCodeStep();
    codeInput.focus();
  } else {
    showType(chosenType());
  }
  setInterval(tick, 1000);
})();
