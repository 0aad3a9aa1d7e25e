-- Argo CD health of an OmenDB (omendb.io/v1alpha1), read from the status the OmenDB operator writes
-- (operator/omendb_operator/status.py: phase, observedGeneration, conditions Ready, Progressing,
-- Degraded, ...). Install as resource.customizations.health.omendb.io_OmenDB (docs/gitops.md).
-- The kstatus conditions Reconciling and Stalled are honoured when the operator writes them.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the OmenDB operator to report a status"
  return hs
end

-- A status older than the spec says nothing about the spec just applied (kstatus' first rule).
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the OmenDB operator to act on generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end

local degraded = condition(status, "Degraded")
if status.phase == "Failed" or status.phase == "Degraded" or is_true(degraded) then
  hs.status = "Degraded"
  hs.message = message(degraded, "phase " .. status.phase)
  return hs
end

local ready = condition(status, "Ready")
if status.phase == "Hibernated" then
  hs.status = "Suspended"
  hs.message = message(ready, "Hibernated: spec.hibernate is true")
  return hs
end

local reconciling = condition(status, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

local progressing = condition(status, "Progressing")
if is_true(progressing) then
  hs.status = "Progressing"
  hs.message = message(progressing, "phase " .. status.phase)
  return hs
end

if status.phase == "Ready" and is_true(ready) then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "phase " .. status.phase)
return hs
