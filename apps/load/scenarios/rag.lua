-- RAG over a shared document pool. Every request carries a shared
-- instruction, `k` documents retrieved from a pool of `docs` (popular ones
-- more often: Zipf with exponent `zipf`), and a fresh question. Documents are
-- placed in pool order, so requests whose first document agrees share a
-- prefix (instruction + that document); a cache of non-prefix documents can
-- reuse the others too. Each request is labelled with its first document as
-- its session, so "by_turn" in the report compares a document's first use
-- (cold) with its later ones.
--
-- Text models: /v1/chat/completions; --token-ids: /v1/completions.
--
-- args: docs=16 doc_len=300 k=2 zipf=1.1 question=24 max_tokens=32 requests=0
--       (requests=0: until --num-requests or --duration)

local A = {}
local weights = {}
local total_weight = 0
local sent = 0

function init(args)
  A.docs = tonumber(args.docs or 16)
  A.doc_len = tonumber(args.doc_len or 300)
  A.k = tonumber(args.k or 2)
  A.zipf = tonumber(args.zipf or 1.1)
  A.question = tonumber(args.question or 24)
  A.max_tokens = tonumber(args.max_tokens or 32)
  A.requests = tonumber(args.requests or 0)
  assert(A.k >= 1 and A.k <= A.docs, "k must be in [1, docs]")
  for i = 1, A.docs do
    weights[i] = 1 / i ^ A.zipf
    total_weight = total_weight + weights[i]
  end
end

local function pick()
  local x = kvflow.random() * total_weight
  for i = 1, A.docs do
    x = x - weights[i]
    if x <= 0 then return i end
  end
  return A.docs
end

function request(ctx)
  if A.requests > 0 and sent >= A.requests then return nil end
  sent = sent + 1
  local chosen, seen = {}, {}
  while #chosen < A.k do
    local d = pick()
    if not seen[d] then
      seen[d] = true
      chosen[#chosen + 1] = d
    end
  end
  table.sort(chosen)
  local question = kvflow.prompt(A.question, "rag-q:" .. ctx.index)
  local session = "doc-" .. chosen[1]
  if kvflow.token_ids then
    local ids = kvflow.tokens(32, "rag-instruction")
    for _, d in ipairs(chosen) do kvflow.append(ids, kvflow.tokens(A.doc_len, "doc:" .. d)) end
    kvflow.append(ids, question)
    return { prompt = ids, max_tokens = A.max_tokens, session = session }
  end
  local parts = { "Answer the question using only these documents." }
  for _, d in ipairs(chosen) do
    parts[#parts + 1] = "Document " .. d .. ": " .. kvflow.words(A.doc_len, "doc:" .. d)
  end
  parts[#parts + 1] = "Question: " .. question
  return {
    messages = { { role = "user", content = table.concat(parts, "\n\n") } },
    max_tokens = A.max_tokens,
    session = session,
  }
end
