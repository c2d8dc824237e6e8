package api

import (
	"net/http"

	"github.com/heraldpush/herald/internal/apierr"
)

type appCreated struct {
	AppKey       string `json:"app_key"`
	Name         string `json:"name"`
	MasterSecret string `json:"master_secret"`
}

func (a *API) createApp(w http.ResponseWriter, r *http.Request) error {
	if err := a.admin(r); err != nil {
		return err
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := apierr.ReadJSON(r, a.opts.MaxBody, &req); err != nil {
		return err
	}
	app, secret, err := a.reg.CreateApp(r.Context(), req.Name)
	if err != nil {
		return registryError(err)
	}
	a.log.Info("app created", "app", app.Key, "name", app.Name)
	return apierr.WriteJSON(w, http.StatusCreated, appCreated{AppKey: app.Key, Name: app.Name, MasterSecret: secret})
}
