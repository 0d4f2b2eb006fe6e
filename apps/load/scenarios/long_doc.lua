-- Questions over long documents: a few long documents, each asked many
-- short questions. The document is the long shared prefix and the question
-- the short tail, so a prefix cache turns every ask after the first into a
-- short prefill. Each request is labelled with its document as its session,
-- so "by_turn" in the report compares a document's first ask (cold) with the
-- later ones.
--
-- Text models: /v1/chat/completions; --token-ids: /v1/completions.
--
-- args: docs=4 doc_len=2000 question=20 max_tokens=32 requests=0
--       (requests=0: until --num-requests or --duration)

local A = {}
local sent = 0

function init(args)
  A.docs = tonumber(args.docs or 4)
  A.doc_len = tonumber(args.doc_len or 2000)
  A.question = tonumber(args.question or 20)
  A.max_tokens = tonumber(args.max_tokens or 32)
  A.requests = tonumber(args.requests or 0)
  assert(A.docs >= 1, "docs must be >= 1")
end

function request(ctx)
  if A.requests > 0 and sent >= A.requests then return nil end
  sent = sent + 1
  local d = kvflow.random(A.docs)
  local question = kvflow.prompt(A.question, "long-q:" .. ctx.index)
  if kvflow.token_ids then
    local ids = kvflow.append(kvflow.tokens(A.doc_len, "long-doc:" .. d), question)
    return { prompt = ids, max_tokens = A.max_tokens, session = "doc-" .. d }
  end
  local text = "Read the document, then answer.\n\n" .. kvflow.words(A.doc_len, "long-doc:" .. d) ..
      "\n\nQuestion: " .. question
  return { messages = { { role = "user", content = text } }, max_tokens = A.max_tokens, session = "doc-" .. d }
end
