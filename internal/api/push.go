package api

import (
	"errors"
	"net/http"

	"github.com/heraldpush/herald/internal/apierr"
	"github.com/heraldpush/herald/internal/push"
	"github.com/heraldpush/herald/internal/strictjson"
)

func (a *API) push(w http.ResponseWriter, r *http.Request, app push.App) error {
	if err := a.spend(app.Key, 1); err != nil {
		return err
	}
	body, err := apierr.ReadBody(r, a.opts.MaxBody)
	if err != nil {
		return err
	}
	req, err := push.DecodeRequest(body)
	if err != nil {
		return pushError(err)
	}
	res, err := a.delivery.Push(r.Context(), app, &req)
	if err != nil {
		return pushError(err)
	}
	return apierr.WriteJSON(w, http.StatusAccepted, res)
}

// batchResult is one push of a batch: its result, or its error.
type batchResult struct {
	MsgID     string        `json:"msg_id,omitempty"`
	Duplicate bool          `json:"duplicate,omitempty"`
	Targeted  int           `json:"targeted"`
	Unknown   []string      `json:"unknown,omitempty"`
	Error     *apierr.Error `json:"error,omitempty"`
}

// pushBatch accepts up to MaxBatch pushes in one durable write. Each push is
// validated on its own; the answer lists a result or an error per push, in
// order, and is 202 when at least one was accepted. The batch spends one
// push of the app's rate per push in it, all or none: one that does not
// fit is refused whole with 429, before any of it is stored.
func (a *API) pushBatch(w http.ResponseWriter, r *http.Request, app push.App) error {
	body, err := apierr.ReadBody(r, a.opts.MaxBody)
	if err != nil {
		return err
	}
	var env struct {
		// Each push is checked, and refused, on its own.
		Pushes []strictjson.Unchecked `json:"pushes"`
	}
	if err := apierr.DecodeJSON(body, &env); err != nil {
		if e := (*apierr.Error)(nil); errors.As(err, &e) && e.Code == apierr.BadJSON.Code {
			return apierr.BadJSON.With("a batch is {\"pushes\":[...]}: %s", e.Message)
		}
		return err
	}
	if len(env.Pushes) == 0 || len(env.Pushes) > a.opts.MaxBatch {
		return apierr.BadBatch.With("a batch holds 1 to %d pushes, not %d", a.opts.MaxBatch, len(env.Pushes))
	}
	if err := a.spend(app.Key, len(env.Pushes)); err != nil {
		return err
	}
	out := make([]batchResult, len(env.Pushes))
	reqs := make([]*push.Request, 0, len(env.Pushes))
	index := make([]int, 0, len(env.Pushes))
	for i, raw := range env.Pushes {
		req, err := push.DecodeRequest(raw)
		if err != nil {
			if !errors.As(pushError(err), &out[i].Error) {
				return err
			}
			continue
		}
		reqs = append(reqs, &req)
		index = append(index, i)
	}
	accepted := 0
	if len(reqs) > 0 {
		results, errs, err := a.delivery.PushBatch(r.Context(), app, reqs)
		if err != nil {
			return err
		}
		for j, res := range results {
			i := index[j]
			if errs[j] != nil {
				if !errors.As(pushError(errs[j]), &out[i].Error) {
					return errs[j]
				}
				continue
			}
			out[i] = batchResult{MsgID: res.MsgID, Duplicate: res.Duplicate, Targeted: res.Targeted, Unknown: res.Unknown}
			accepted++
		}
	}
	status := http.StatusAccepted
	if accepted == 0 {
		status = http.StatusBadRequest
	}
	return apierr.WriteJSON(w, status, struct {
		Accepted int           `json:"accepted"`
		Results  []batchResult `json:"results"`
	}{accepted, out})
}

func (a *API) report(w http.ResponseWriter, r *http.Request, app push.App) error {
	d, err := a.delivery.Describe(r.Context(), app.Key, r.PathValue("id"))
	if err != nil {
		return pushError(err)
	}
	return apierr.WriteJSON(w, http.StatusOK, messageViewOf(&d))
}

func (a *API) recall(w http.ResponseWriter, r *http.Request, app push.App) error {
	if err := a.delivery.Recall(r.Context(), app.Key, r.PathValue("id")); err != nil {
		return pushError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
