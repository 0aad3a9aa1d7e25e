-- Argo CD health of an OmenDBRestore (omendb.io/v1alpha1), read from the status the OmenDB operator
-- writes (operator/omendb_operator/restores.py: phase Pending -> Running (step ScaleDown, Restore,
-- ScaleUp, Verify, Discard; PutBack after a failure) -> Succeeded | Failed, error, condition Ready).
-- Install as resource.customizations.health.omendb.io_OmenDBRestore (docs/gitops.md).
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
  hs.message = "Waiting for the OmenDB operator to start the restore"
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end

-- A finished restore is final (the operator never runs it again, nor updates its observedGeneration).
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.error or message(ready, "the restore failed")
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message(ready, "the restore succeeded")
  return hs
end

-- PutBack: the restore already failed; the operator is putting the previous data back, and the
-- restore ends Failed.
if status.step == "PutBack" then
  hs.status = "Degraded"
  hs.message = message(ready, status.error or "the restore failed; putting the previous data back")
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the OmenDB operator to act on generation " .. tostring(generation)
  return hs
end

local reconciling = condition(status, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

-- Pending (waiting for another restore, a backup or a bootstrap) and Running (a step of the procedure).
local where = status.phase
if status.step ~= nil then
  where = where .. " (step " .. status.step .. ")"
end
hs.status = "Progressing"
hs.message = where .. ": " .. message(ready, "the restore has not finished")
return hs
