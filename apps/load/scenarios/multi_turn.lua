-- Multi-turn chat sessions. Each session opens with its own context (a long
-- first message) and a question, then asks follow-ups; every answer is
-- appended to the session's history, so each turn's prompt extends the last
-- one and a prefix cache can serve all but the new tail. Later turns' TTFT
-- against the first's is in the report's "by_turn".
--
-- Text models: /v1/chat/completions with the growing message list.
-- --token-ids (random-weight presets): /v1/completions with the growing list
-- of ids, the reply's ids appended where the server sends them (kvflow serve
-- does for models without a tokenizer); otherwise as many deterministic ids
-- stand in for it (then the cached prefix reaches the end of the previous
-- prompt, not the end of the previous reply).
--
-- args: sessions=8 turns=4 context=400 question=24 max_tokens=32 think=0
--       (lengths in words or token ids; think: mean seconds between turns)

local A = {}
local sessions = {}
local started = 0

function init(args)
  A.sessions = tonumber(args.sessions or 8)
  A.turns = tonumber(args.turns or 4)
  A.context = tonumber(args.context or 400)
  A.question = tonumber(args.question or 24)
  A.max_tokens = tonumber(args.max_tokens or 32)
  A.think = tonumber(args.think or 0)
  assert(A.sessions and A.sessions >= 1, "sessions must be a number >= 1")
  assert(A.turns and A.turns >= 1, "turns must be a number >= 1")
end

local function build(s)
  if kvflow.token_ids then
    return { prompt = s.ids, max_tokens = A.max_tokens, session = s.id }
  end
  return { messages = s.messages, max_tokens = A.max_tokens, session = s.id }
end

function request(ctx)
  local s
  if ctx.session == nil then
    if started >= A.sessions then return nil end -- every session started
    started = started + 1
    s = { id = "chat-" .. started }
    sessions[s.id] = s
    local context = kvflow.prompt(A.context, s.id .. ":context")
    local question = kvflow.prompt(A.question, s.id .. ":q0")
    if kvflow.token_ids then
      s.ids = kvflow.append(context, question)
    else
      s.messages = {
        { role = "system", content = "You are a helpful assistant. Answer briefly." },
        { role = "user", content = context .. "\n\nQuestion: " .. question },
      }
    end
  else
    s = sessions[ctx.session]
    local question = kvflow.prompt(A.question, s.id .. ":q" .. ctx.turn)
    if kvflow.token_ids then
      kvflow.append(s.ids, question)
    else
      table.insert(s.messages, { role = "user", content = question })
    end
  end
  return build(s)
end

function response(ctx, resp)
  local s = sessions[ctx.session]
  if not resp.ok or ctx.turn + 1 >= A.turns then
    sessions[ctx.session] = nil -- failed or finished: the session ends
    return false
  end
  if kvflow.token_ids then
    local reply = resp.token_ids or kvflow.tokens(math.max(resp.output_tokens, 1), s.id .. ":a" .. ctx.turn)
    kvflow.append(s.ids, reply)
  else
    table.insert(s.messages, { role = "assistant", content = resp.text })
  end
  if A.think > 0 then return kvflow.exponential(A.think) end
  return true
end
